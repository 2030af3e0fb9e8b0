"""What tests and benchmarks share to run roles: the in-memory driver and the local network."""
