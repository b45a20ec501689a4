"""What an operator sees: structured logs, Prometheus metrics, health endpoints,
OpenTelemetry traces."""
