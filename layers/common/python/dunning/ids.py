"""Deterministic ids: the same inputs give the same id in every run and process."""

from __future__ import annotations

from hashlib import blake2b


def stable_id(*parts: object) -> str:
    """A short deterministic id (actions, audit events, approvals)."""
    return blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()
