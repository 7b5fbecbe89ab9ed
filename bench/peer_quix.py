"""The peer of bench/peer.py: a Quix Streams app writing our telemetry with its MongoDBSink.

Runs in its own virtualenv (quixstreams pins a confluent-kafka older than ours; bench/peer.py
creates that venv and starts this file there with PYTHONPATH at the checkout, for our codec).
Configured as the sink's docs describe: one `UpdateOne({_id: key}, {$set: value},
upsert=True)` per record, written in one bulk per partition at each checkpoint, offsets
committed after the write (at-least-once). Everything else is Quix's default: a checkpoint
every 5 s, no event-time guard.

    <peer-venv>/bin/python bench/peer_quix.py --broker HOST:PORT --group G --topic T \
        --mongo-port 27017 --db D [--collection twins] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application
from quixstreams.models import Deserializer
from quixstreams.sinks.community.mongodb import MongoDBSink

from fleet.avro import telemetry_codec


class FleetTelemetry(Deserializer):
    """Our Avro single-object messages (the bridge's bytes) into a dict, with our codec."""

    def __init__(self) -> None:
        super().__init__()
        self.codec = telemetry_codec()

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        return self.codec.decode(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mongo-host", default="127.0.0.1")
    parser.add_argument("--mongo-port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--collection", default="twins")
    parser.add_argument("--state-dir", default="state")
    parser.add_argument("--commit-interval", type=float, default=5.0, help="Quix's default")
    args = parser.parse_args()

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        # As our projector's benchmark runs use: a kill -9'd member leaves the group in 6 s.
        consumer_extra_config={"session.timeout.ms": 6000},
        loglevel="INFO",  # the sink logs each bulk it wrote: bench/peer.py counts them
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer=FleetTelemetry())
    sdf = app.dataframe(topic)
    sdf.sink(
        MongoDBSink(
            host=args.mongo_host,
            port=args.mongo_port,
            db=args.db,
            collection=args.collection,
            update_method="UpdateOne",
            upsert=True,
        )
    )
    app.run()


if __name__ == "__main__":
    main()
