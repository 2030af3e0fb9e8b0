"""What performs a role's effects: the event loop (loop.py), its transport seam, the store,
metrics and per-peer rate limits."""
