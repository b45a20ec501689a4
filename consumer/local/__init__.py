"""Local tooling: a real single-node Kafka for tests and the demo, the demo itself, sample
events."""
