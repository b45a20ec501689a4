"""The commands behind the CLI, long-running and one-shot: run, ingest, replay, publish,
dispatch, validate."""
