"""A twin is state, not history: its worst case fits in 4 kB of BSON (half an AWS IoT shadow's
8 kB), however long a car drives and however many commands it gets.

What keeps it there: readings and scores go to the history collection, command outcomes to
`command_outcomes`; `reported` has one time, its reading's; a condition is named by its rule
and wheel (no key beside them); reading and command identities are packed bytes."""

from __future__ import annotations

import uuid

import bson

from fleet.contract import DESIRED_PROPERTIES, WHEELS
from fleet.settings import Settings
from ml.features import FEATURES
from tests.commands.factories import cmd
from tests.twin.factories import reading, score
from twin import desired
from twin.events import Envelope
from twin.fold import DEFAULT_DEDUPE_WINDOW, Twin, fold

LIMIT = 4 * 1024
CAR = "c" * 64  # the longest car id the bridge accepts


def worst_case_twin(readings: int) -> Twin:
    """Every health condition active, every desired property set and pending (delta), the
    commands remembered full (of refusals), the dedupe window full, a score with every
    contributing sensor, and each topic's events on several partitions (as after a topic's
    partitions were increased)."""
    sick = {
        **{f"tire_pressure_{w}": 20 for w in WHEELS},
        **{f"accelerometer_{w}_value": -3.999999 for w in WHEELS},
        "engine_vibration_amplitude": 5999.123456,
        "speed": 38.912345,
        "coolant_temp": 149.123456,
        "current_draw": 99.123456,
        "control_unit_firmware": 1000,
    }
    events: list[Envelope] = []
    for seq in range(readings):
        partition = seq % 2
        events.append(
            Envelope("fleet.telemetry.v1", partition, seq, "telemetry", reading(CAR, seq, **sick))
        )
        record = score(CAR, seq, value=0.987654321, threshold=0.123456789, version=f"{seq:020d}")
        record["top_sensors"] = [  # as many as the scorer names (ml.top_sensors), the longest
            {"sensor": name, "contribution": 0.123456789}
            for name in sorted(FEATURES, key=len, reverse=True)[: Settings().ml.top_sensors]
        ]
        record["is_anomaly"] = True  # the car in alarm: its verdict names its reasons
        record["model_name"] = "autoencoder-supervised-combined"
        events.append(Envelope("fleet.anomalies.v1", partition, seq, "anomaly", record))
    for i in range(desired.COMMANDS_REMEMBERED + 5):
        for name in DESIRED_PROPERTIES:
            command = cmd(
                CAR,
                value=2000,
                expected_version=10**12 + i,  # stale: refused, with a long reason
                prop=name,
                command_id=uuid.uuid4().hex,
                rollout_id=uuid.uuid4().hex,
            )
            command["issuer"] = "fleet-engineer-with-a-long-name@" + "h" * 40
            events.append(Envelope("fleet.commands.v1", i % 2, i, "command", command))
    for i, name in enumerate(DESIRED_PROPERTIES):  # then accepted: desired set, delta pending
        command = cmd(
            CAR, value=2000, prop=name, command_id=uuid.uuid4().hex, rollout_id=uuid.uuid4().hex
        )
        events.append(Envelope("fleet.commands.v1", i % 2, 1000 + i, "command", command))
    twin = fold(None, CAR, events).twin
    assert twin is not None
    return twin


def test_the_worst_case_twin_fits_in_4_kb() -> None:
    twin = worst_case_twin(readings=DEFAULT_DEDUPE_WINDOW * 3)
    assert len(twin["health"]["conditions"]) == 11  # every condition holds
    assert set(twin["delta"]) == set(DESIRED_PROPERTIES)
    assert len(twin["recent_commands"]) == desired.COMMANDS_REMEMBERED * desired.DIGEST_BYTES
    assert len(twin["positions"]) == 6  # 3 topics x 2 partitions
    assert twin["anomaly"]["is_anomaly"] and len(twin["anomaly"]["reasons"]) == 3
    size = len(bson.encode(twin))
    assert size <= LIMIT, f"{size} bytes"


def test_a_twin_does_not_grow_with_the_readings_it_has_seen() -> None:
    assert len(bson.encode(worst_case_twin(40))) == len(bson.encode(worst_case_twin(400)))


def test_a_twin_written_before_the_history_moved_out_slims_down_on_its_next_event() -> None:
    old = worst_case_twin(3)
    old["history"] = [{"seq": s, "speed": 1.0} for s in range(50)]
    old["anomaly_history"] = [{"seq": s, "score": 0.1} for s in range(50)]
    old["command_log"] = [{"command_id": str(s), "outcome": "applied"} for s in range(20)]
    later = Envelope("fleet.telemetry.v1", 0, 10_000, "telemetry", reading(CAR, 10_000))
    twin = fold(old, CAR, [later]).twin
    assert twin is not None
    assert not {"history", "anomaly_history", "command_log"} & set(twin)
    assert "history" in old  # the caller's document is untouched
