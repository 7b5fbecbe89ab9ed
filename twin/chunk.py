"""A chunk of raw messages decoded in bulk: each car's events, as rows of shared columns.

The projector's hot path decodes a chunk's readings and scores with `fleet.bulk_avro` (numpy
over the concatenated messages, ~2.5 µs a message instead of ~20 µs with fastavro) and folds
each car from the columns (`twin/fold_columns.py`). Every car keeps its raw messages too: one
with a command (never in columns), or whose events are not in order, is folded by the
reference fold, its messages decoded one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.avro import AvroDecodeError, Codec
from fleet.bulk_avro import AnomalyBatchDecoder, DecodedBatch, TelemetryBatchDecoder
from fleet.contract import SENSORS
from twin import health
from twin.events import Envelope, Kind
from twin.project import Raw, decode_messages, log_undecodable

Columns = dict[str, npt.NDArray[Any]]


@dataclass
class CarEvents:
    """One car's events in a chunk, in Kafka order."""

    chunk: Chunk
    raws: list[Raw] = field(default_factory=list)
    readings: list[int] = field(default_factory=list)  # its rows of chunk.readings, in order
    scores: list[int] = field(default_factory=list)  # its rows of chunk.scores, in order
    in_columns: bool = True  # False: some event is only in `raws` (reference fold)
    #: (row, verdicts): the health rules' verdicts on its first reading of the chunk, judged
    #: beside its twin's reported reading (fold_columns.judge_first_readings), when known.
    first_judged: tuple[int, npt.NDArray[np.int8]] | None = None

    def envelopes(self) -> list[Envelope]:
        """The events decoded one at a time, for the reference fold."""
        return decode_messages(self.raws, self.chunk.codecs)


@dataclass
class Chunk:
    codecs: Mapping[str, tuple[Kind, Codec]]
    readings: Columns
    scores: Columns
    reading_raws: list[Raw]  # row -> its message
    score_raws: list[Raw]
    cars: dict[str, CarEvents] = field(default_factory=dict)
    undecodable: int = 0

    @cached_property
    def sensor_values(self) -> list[tuple[Any, ...]]:
        """Each reading's sensors (SENSORS order) as Python values, made once per chunk."""
        return list(zip(*(self.readings[name].tolist() for name in SENSORS), strict=True))

    @cached_property
    def verdicts(self) -> npt.NDArray[np.int8]:
        """The health rules' verdicts on every reading (a column per rule of health.RULES),
        each judged beside the car's reading before it in this chunk. The fold judges a car's
        first new reading again beside its twin's last one (`uses_previous` rules)."""
        now = {name: self.readings[name] for name in health.FIELDS}
        cars = self.readings["car_id"]
        _ids, codes = np.unique(cars, return_inverse=True)
        order = np.argsort(codes, kind="stable")  # each car's readings together, in order
        same_car = codes[order][1:] == codes[order][:-1]
        before_row = np.full(len(cars), -1)
        before_row[order[1:][same_car]] = order[:-1][same_car]
        has_before = before_row >= 0
        before = {name: values[np.maximum(before_row, 0)] for name, values in now.items()}
        return health.verdict_matrix(health.Readings(now, before, has_before))


class ChunkDecoder:
    """Decodes chunks of raw messages of the projector's topics (topic -> kind and codec)."""

    def __init__(self, codecs: Mapping[str, tuple[Kind, Codec]]) -> None:
        self.codecs = codecs
        self.telemetry = TelemetryBatchDecoder(features=False)
        self.anomalies = AnomalyBatchDecoder()
        for kind, codec in codecs.values():  # the codecs given (they may read older versions)
            if kind == "telemetry":
                self.telemetry = TelemetryBatchDecoder(codec, features=False)
            elif kind == "anomaly":
                self.anomalies = AnomalyBatchDecoder(codec)

    def decode(self, messages: Sequence[Raw]) -> Chunk:
        by_kind: dict[Kind, list[Raw]] = {"telemetry": [], "anomaly": [], "command": []}
        for message in messages:
            by_kind[self.codecs[message.topic][0]].append(message)
        readings = self.telemetry.decode([m.value for m in by_kind["telemetry"]])
        scores = self.anomalies.decode([m.value for m in by_kind["anomaly"]])
        chunk = Chunk(
            self.codecs,
            readings.columns,
            scores.columns,
            [by_kind["telemetry"][i] for i in readings.index.tolist()],
            [by_kind["anomaly"][i] for i in scores.index.tolist()],
        )
        chunk.undecodable = _log_errors(readings, by_kind["telemetry"]) + _log_errors(
            scores, by_kind["anomaly"]
        )
        # Kafka order per car: walk the messages again, each to its row (or its record).
        reading_row = _rows(readings, len(by_kind["telemetry"]))
        score_row = _rows(scores, len(by_kind["anomaly"]))
        reading_cars, score_cars = readings.columns["car_id"], scores.columns["car_id"]
        counts: dict[Kind, int] = {"telemetry": 0, "anomaly": 0, "command": 0}
        cars = chunk.cars
        for message in messages:
            kind = self.codecs[message.topic][0]
            k = counts[kind]
            counts[kind] = k + 1
            if kind == "command":
                car_id = self._command_car(message)
                if car_id is None:
                    chunk.undecodable += 1
                    continue
                events = cars.get(car_id) or cars.setdefault(car_id, CarEvents(chunk))
                events.in_columns = False
            else:
                row = (reading_row if kind == "telemetry" else score_row)[k]
                if row < 0:
                    continue  # undecodable: logged above
                car_id = (reading_cars if kind == "telemetry" else score_cars)[row]
                events = cars.get(car_id) or cars.setdefault(car_id, CarEvents(chunk))
                (events.readings if kind == "telemetry" else events.scores).append(row)
            events.raws.append(message)
        return chunk

    def _command_car(self, message: Raw) -> str | None:
        try:
            return str(self.codecs[message.topic][1].decode(message.value)["car_id"])
        except AvroDecodeError as exc:
            log_undecodable(message, exc)
            return None


def _rows(batch: DecodedBatch, count: int) -> list[int]:
    """Each message's row in the batch's columns, -1 where it did not decode."""
    rows = np.full(count, -1, np.int64)
    rows[batch.index] = np.arange(len(batch.index))
    out: list[int] = rows.tolist()
    return out


def _log_errors(batch: DecodedBatch, messages: list[Raw]) -> int:
    for i, error in batch.errors:
        log_undecodable(messages[i], error)
    return len(batch.errors)
