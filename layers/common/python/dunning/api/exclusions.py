"""The stored exclusion lists, applied inside the write that changes an account.

Saving a list applies it to the accounts it names that exist; creating or
changing an account, or ingesting its invoices, applies every list that names
them. Each of those writes carries the registry's guard (see
`ConfigStore.exclusion_snapshot`), so a list saved meanwhile makes the write
read the lists again: the result does not depend on the order of the calls.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from dunning import collect
from dunning.model import AccountView
from dunning.store import Mutation
from dunning.store.config import ConfigStore, ExclusionSnapshot


class CurrentExclusions:
    """A change for `DynamoStore` writes: the account's view in line with the
    stored exclusion lists, plus the guard that the lists did not change.

    The first call for an account may use the last snapshot the configuration
    store took (for an earlier account of this request, or an earlier request
    in this container): its guard refuses the write if a list changed since. A
    second call for the same account is a retry after a failed write, which
    reads the lists again."""

    def __init__(
        self,
        config: ConfigStore,
        now: datetime,
        actor: str,
        cause: str | None = None,
    ) -> None:
        self.config = config
        self.now = now
        self.actor = actor
        self.cause = cause
        self._snapshot: ExclusionSnapshot | None = None
        self._seen: set[str] = set()

    def snapshot(self, account_id: str) -> ExclusionSnapshot:
        if self._snapshot is None or account_id in self._seen:
            self._snapshot = self.config.exclusion_snapshot(reuse=account_id not in self._seen)
        self._seen.add(account_id)
        return self._snapshot

    def __call__(self, view: AccountView) -> Mutation:
        snapshot = self.snapshot(view.account.account_id)
        mutation = collect.apply_exclusions(
            view, snapshot.lists, now=self.now, actor=self.actor, cause=self.cause
        )
        return replace(mutation, extra=(*mutation.extra, snapshot.guard))
