"""asset-sync: keeps asset records in vendor platforms in step with asset-change events on Kafka."""

__version__ = "0.1.0"
