"""The twin projector: Kafka telemetry and anomaly scores folded into one document per car."""
