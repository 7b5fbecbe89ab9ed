"""`fleet twin rebuild`: replay the topics from the beginning into a fresh collection, swap.

1. Note every partition's end (high watermark) and replay from the beginning up to it into a
   staging collection (with the indexes), in batches, exactly as the projector folds.
2. Swap: point the live name at the staging collection, one atomic single-document update
   (twin/live.py: a rename over the live collection is not atomic for readers on every
   server); queries see the old twins, then the new ones, never a missing collection. The
   replaced collection stays until the next rebuild, for readers that looked it up just before.
3. Catch up: while we replayed, a running projector kept writing into the old collection. Replay
   on, into the new live collection, up to the ends as they are after the swap: every event a
   projector wrote into the old collection before the swap is then applied again (one that
   wrote during the swap writes its batch again into the new one, see twin/projector.py). The
   positions on the twins make events applied twice no-ops, whichever comes first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fleet import clients
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from twin import live, store
from twin.chunk import ChunkDecoder
from twin.fold_columns import fold_car, judge_first_readings
from twin.project import Applied, apply_batch, chunks_by_car, poll
from twin.projector import codecs_for

log = get_logger("twin.rebuild")

Progress = Callable[[int, int], None]  # (events replayed, events to replay)


class RebuildAborted(RuntimeError):
    pass


@dataclass
class RebuildReport:
    staging: str  # the new live collection, once swapped
    replaced: str | None = None  # the collection it replaced (dropped by the next rebuild)
    replayed: int = 0
    caught_up: int = 0
    twins: int = 0
    seconds: float = 0.0
    applied: Applied = field(default_factory=Applied)


def _ends(
    consumer: Consumer, partitions: list[TopicPartition], done: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Each partition's end. A partition not read yet counts as done up to its start (its
    low watermark), so one whose events were all deleted is not waited for."""
    ends = {}
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        ends[(tp.topic, tp.partition)] = high
        done.setdefault((tp.topic, tp.partition), low - 1)
    return ends


def _remaining(
    consumer: Consumer, ends: dict[tuple[str, int], int], done: dict[tuple[str, int], int]
) -> int:
    """Events between where we are and the ends (transaction markers make this an estimate)."""
    positions = consumer.position([TopicPartition(t, p) for t, p in ends])
    left = 0
    for tp in positions:
        key = (tp.topic, tp.partition)
        at = max(done.get(key, -1) + 1, tp.offset)
        left += max(0, ends[key] - at)
    return left


def _replay_to(  # noqa: PLR0917
    consumer: Consumer,
    ends: dict[tuple[str, int], int],
    settings: Settings,
    collection_name: str,
    done: dict[tuple[str, int], int],
    shutdown: Shutdown,
    progress: Progress | None,
) -> tuple[Applied, int]:
    """Consume until every partition reached its end, applying batches to the collection.

    Returns what was applied and how many messages were read."""
    database = clients.mongo_database(settings)
    collection = store.twins_collection(database, collection_name)
    decoder = ChunkDecoder(codecs_for(settings))
    transaction = settings.twin.transactions and store.supports_transactions(collection)
    applied = Applied()
    total = _remaining(consumer, ends, done)
    replayed = 0
    if progress:
        progress(0, total)
    while _remaining(consumer, ends, done) > 0:
        if shutdown.requested:
            raise RebuildAborted("rebuild interrupted; the live twins were left as they were")
        batch = poll(consumer, settings.twin.batch_size, settings.twin.poll_timeout)
        # Events past the end noted at the start are applied too: skipping them here would
        # lose them if a running projector wrote them into the collection being replaced.
        for selected in chunks_by_car(batch, settings.twin.write_chunk):
            chunk = decoder.decode(selected)
            if chunk.cars:
                applied += apply_batch(
                    collection,
                    chunk.cars,
                    settings.twin.dedupe_window,
                    transaction=transaction,
                    fold_events=fold_car,
                    prepare=judge_first_readings,
                )
            for message in selected:  # in order per partition: the last one wins
                key = (message.topic, message.partition)
                done[key] = max(done.get(key, -1), message.offset)
        replayed += len(batch)
        if progress:
            progress(min(replayed, total), total)
    return applied, replayed


def rebuild(
    settings: Settings,
    progress: Progress | None = None,
    shutdown: Shutdown | None = None,
    **consumer_overrides: str | int,
) -> RebuildReport:
    shutdown = shutdown or Shutdown()
    started = time.monotonic()
    database = clients.mongo_database(settings)
    name = settings.twin.collection
    staging_name = f"{name}_rebuild_{uuid.uuid4().hex[:8]}"
    staging = store.twins_collection(database, staging_name)
    store.ensure_indexes(staging)
    report = RebuildReport(staging=staging_name)

    # Its own throwaway group id: the rebuild assigns partitions itself and commits nothing.
    consumer = clients.kafka_consumer(
        settings, f"{settings.groups.twin}-rebuild-{uuid.uuid4().hex[:8]}", **consumer_overrides
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic in codecs_for(settings)
            if topic in metadata.topics
            for partition in sorted(metadata.topics[topic].partitions)
        ]
        consumer.assign(partitions)
        done: dict[tuple[str, int], int] = {}
        ends = _ends(consumer, partitions, done)
        log.info("replaying", into=staging_name, events=sum(ends.values()))
        applied, report.replayed = _replay_to(
            consumer, ends, settings, staging_name, done, shutdown, progress
        )
        report.applied += applied

        report.replaced = live.swap(database, name, staging_name)
        log.info("swapped", name=name, collection=staging_name, replaced=report.replaced)

        later = _ends(consumer, partitions, done)
        try:
            applied, report.caught_up = _replay_to(
                consumer, later, settings, staging_name, done, shutdown, None
            )
        except RebuildAborted:
            raise RebuildAborted(
                "rebuild interrupted after the swap, before it caught up with the events a "
                "running projector wrote meanwhile: run it again"
            ) from None
        report.applied += applied
    except BaseException:
        if report.replaced is None:  # not swapped in: nobody reads it
            database.drop_collection(staging_name)
        raise
    finally:
        consumer.close()
    report.twins = staging.estimated_document_count()
    report.seconds = time.monotonic() - started
    return report
