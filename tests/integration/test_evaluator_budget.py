"""An account whose decision needs more than one transaction does not block its
shard (DynamoDB holds 100 writes per TransactWriteItems).

Invoice mode opens one case per overdue invoice: an account with 120 of them
is decided in passes at the same instant (`Decision.more`), each pass one
conditional transaction. A decision the budget cannot bound is left unwritten
and due, counted, while the shard goes on with its other accounts.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from dunning import engine
from dunning.model import AccountView, Mode
from dunning.store.schema import iso
from tests.builders import account, email, invoice, level, policy
from tests.integration.conftest import Env
from tests.integration.helpers import AS_OF, drain_actions, raw_account, run_scheduled, total

TODAY = AS_OF.date()


def _seed(env: Env, big: int, small_accounts: int) -> None:
    pol = policy(
        policy_id="per-invoice",
        mode=Mode.INVOICE,
        levels=(level("reminder", 10, email("r1"), email("r2")), level("notice", 30)),
    )
    env.configure([pol], AS_OF - timedelta(days=30))
    # Tokyo: 16:00 local at AS_OF, inside the default sending hours
    views = [
        AccountView(
            account=account(account_id="acc-big", currency="EUR", timezone="Asia/Tokyo"),
            invoices=tuple(
                invoice(f"inv-{i:03}", account_id="acc-big", due=TODAY - timedelta(days=12))
                for i in range(big)
            ),
        )
    ]
    views += [
        AccountView(
            account=account(account_id=f"acc-{i:02}", timezone="Asia/Tokyo"),
            invoices=(invoice("inv-1", account_id=f"acc-{i:02}", due=TODAY - timedelta(days=12)),),
        )
        for i in range(small_accounts)
    ]
    env.store.import_views([(v, AS_OF - timedelta(hours=1)) for v in views], AS_OF)


def test_an_account_needing_more_than_one_transaction_does_not_block_its_shard(env: Env) -> None:
    # Given an account with 120 overdue invoices in invoice mode, and 20 others
    _seed(env, big=120, small_accounts=20)
    # When one scheduled run evaluates the portfolio
    results = run_scheduled(env, AS_OF)
    # Then every account was evaluated, the big one in several passes
    assert total(results, "evaluated") == 21
    assert total(results, "extra_passes") >= 2
    assert total(results, "too_large") == 0
    # and every invoice got its case, and each action reached its queue once
    big = env.store.get_view("acc-big").view
    assert len([c for c in big.cases if c.is_open]) == 120
    sent = Counter(a.account_id for a in drain_actions(env))
    assert sent["acc-big"] == 120 * 2, sent
    assert all(sent[f"acc-{i:02}"] == 2 for i in range(20)), sent
    assert len(sent) == 21
    # and the big account sleeps until its next level, not at the run's instant
    due_at = raw_account(env, "acc-big").get("due_at", {}).get("S")
    assert due_at is not None and due_at > iso(AS_OF)


def test_a_decision_that_cannot_fit_is_left_due_and_the_shard_goes_on(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine without its write budget (what a decision the budget cannot
    # bound looks like to the store) and an account needing 121+ writes
    monkeypatch.setattr(engine, "WRITE_BUDGET", 10_000)
    _seed(env, big=120, small_accounts=20)
    before = raw_account(env, "acc-big")
    # When the run evaluates the shard
    results = run_scheduled(env, AS_OF)
    # Then the big account is counted and left exactly as it was, still due
    assert total(results, "too_large") == 1
    assert raw_account(env, "acc-big") == before
    # and the others were evaluated and their actions sent
    sent = Counter(a.account_id for a in drain_actions(env))
    assert "acc-big" not in sent
    assert all(sent[f"acc-{i:02}"] == 2 for i in range(20))
