"""The GCS data lake: an exactly-once Avro archiver of Kafka topics, and batch reads of it."""
