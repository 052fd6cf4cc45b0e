"""Deterministic ids: the same inputs give the same id in every run and process."""

from __future__ import annotations

from hashlib import blake2b


def stable_id(*parts: object) -> str:
    """A short deterministic id (actions, audit events, approvals)."""
    return joined_id("|".join(map(str, parts)))


def joined_id(joined: str) -> str:
    """`stable_id(*parts)` given `"|".join(map(str, parts))`: the engine's hot paths
    join their parts in one f-string (`{part!s}` is `str(part)`), a third cheaper."""
    return blake2b(joined.encode(), digest_size=12).hexdigest()
