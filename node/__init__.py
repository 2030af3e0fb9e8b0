"""The DKMS node: roles as state machines and the runtime that wires them to the world."""
