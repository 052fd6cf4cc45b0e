"""The wall clock, read in one place.

The engine never reads a clock (its `now` is an argument) and the evaluator
takes the scheduled time from its event. What remains — the instant a delivery
or an API write happens — reads `now()` here. The local run's simulated
calendar replaces the source with `use()`, the way an emulator sets a
machine's clock; production never calls `use()`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def _wall() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _wall


def now() -> datetime:
    return _source()


def use(source: Callable[[], datetime] | None) -> None:
    """Read time from `source` from now on (None: the wall clock again)."""
    global _source  # noqa: PLW0603 (the process's one clock)
    _source = source or _wall
