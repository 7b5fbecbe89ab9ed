"""The projector's Prometheus metrics (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "fleet_twin_events",
    "Events seen by the projector, by outcome",
    ["outcome"],  # applied, late, duplicate, redelivered, undecodable
)
BATCH_SIZE = Histogram(
    "fleet_twin_batch_events",
    "Events per polled batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
)
BATCH_CARS = Histogram(
    "fleet_twin_batch_cars",
    "Twins written per batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
)
WRITE_SECONDS = Histogram("fleet_twin_write_seconds", "Read + fold + bulk write of one batch")
CONFLICTS = Counter("fleet_twin_write_conflicts", "Twins re-folded after losing a write race")
RETRIES = Counter("fleet_twin_retries", "Retries while MongoDB or Kafka was away", ["server"])
LAG = Gauge("fleet_twin_lag", "Events not yet applied, per partition", ["topic", "partition"])
BATCH_MAX_CARS = Gauge("fleet_twin_batch_max_cars", "Most cars in the next batch (adapts)")
CACHE_READS = Counter(
    "fleet_twin_cache_reads",
    "Twins asked of the projector's cache",
    ["outcome"],  # hit, miss
)
CACHE_BYTES = Gauge("fleet_twin_cache_bytes", "Bytes of encoded twins in the projector's cache")
