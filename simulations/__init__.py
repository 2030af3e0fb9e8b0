"""Deterministic in-process network simulations of DKMS nodes."""
