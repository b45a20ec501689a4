"""State that outlives a process, kept in Kafka: connection state (rotating tokens),
per-field freshness, runtime control."""
