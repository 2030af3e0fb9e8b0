"""MemoVerifier: answers remembered, never carried over to another message, bounded."""

from __future__ import annotations

import sys

from dkms.protocol.crypto import MemoVerifier, Signer


def test_a_remembered_answer_is_for_that_message_only() -> None:
    signer = Signer(b"\x01" * 32)
    memo = MemoVerifier()
    signature = signer.sign_raw(b"version a")
    assert memo(signer.public, signature, b"version a")
    assert memo(signer.public, signature, b"version a")
    assert memo.hits == 1
    assert not memo(signer.public, signature, b"version b")
    memo.remember(signer.public, b"\x00" * 64, b"made here")
    assert memo(signer.public, b"\x00" * 64, b"made here")
    assert not memo(signer.public, b"\x00" * 64, b"made elsewhere")


def test_large_messages_are_not_kept() -> None:
    signer = Signer(b"\x02" * 32)
    memo = MemoVerifier(size=64)
    for n in range(100):
        memo(signer.public, signer.sign_raw(b"x"), n.to_bytes(4, "big") * 16_384)
    assert len(memo._seen) == 64
    held = sum(sys.getsizeof(part) for key in memo._seen for part in key)
    assert held < 64 * 300  # digests, not the 64 KiB messages


def test_checked_counts_only_signatures_actually_verified() -> None:
    signer = Signer(b"\x03" * 32)
    memo = MemoVerifier()
    signature = signer.sign_raw(b"m")
    memo(signer.public, signature, b"m")
    memo(signer.public, signature, b"m")  # answered from memory
    memo.remember(signer.public, signer.sign_raw(b"n"), b"n")
    memo(signer.public, signer.sign_raw(b"n"), b"n")  # remembered: not checked
    memo(signer.public, signature, b"other")
    assert (memo.checked, memo.hits) == (2, 2)
