"""Audit: one hash-chained record per Exchange. config (the `audit:` section), record/summary/redact (what a
record holds), writer (queue, batches, backpressure), chain (hashing, verify), store/sqlite/postgres (where records
live), tree (trace queries)."""
