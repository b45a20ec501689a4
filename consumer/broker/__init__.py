"""Kafka plumbing: clients built from the configuration, committable offsets, compacted
topics every replica reads, dead-letter records."""
