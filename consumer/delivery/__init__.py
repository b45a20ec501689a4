"""From consumed records to vendor calls: per-asset order, the dispatcher, retries, the
circuit breaker, batching, HTTP."""
