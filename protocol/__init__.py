"""Pure KERI v1: bytes <-> events, signatures, key state, receipts, duplicity evidence.

No I/O here: no sockets, files, clock or randomness. Time and keys come in as arguments.
"""
