"""Typed errors at the storage boundary (mapped from AWS error codes, not text)."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base of the storage errors."""


class ConflictError(StoreError):
    """A conditional write failed: the item exists with another body, or moved on.

    `precondition` is True when the caller's own expected version was stale
    (HTTP 412); otherwise the conflict is about the resource's state (409).
    `index` says which item of a write of several (`upsert_invoices`) refused
    it, when one did.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        precondition: bool = False,
        reasons: list[dict[str, Any]] | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.precondition = precondition
        self.reasons = reasons or []
        self.index = index


class NotFoundError(StoreError):
    """The item does not exist."""


class RetryableError(StoreError):
    """Throttling or a transient service error: try again later."""


class DecisionTooLargeError(StoreError):
    """A decision needs more writes than one transaction holds (100).

    The engine keeps decisions inside its write budget (`engine.WRITE_BUDGET`);
    this is the guard for what the budget cannot bound (a broken payment plan
    freeing hundreds of invoices at once)."""
