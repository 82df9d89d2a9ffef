"""Data steps: ingest -> validate (incl. landmarks) -> prepare (crops, masks, pyramid, shards)."""
