"""Deterministic ids: the same inputs give the same id in every run and process."""

from __future__ import annotations

import hashlib


def stable_id(*parts: object) -> str:
    """A short deterministic id (actions, audit events, approvals)."""
    key = "|".join(map(str, parts))
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
