"""Which policy governs an account or a case, as the evaluator sees it."""

from __future__ import annotations

from decimal import Decimal

from dunning.api.common import Services
from dunning.model import AccountView, Policy
from dunning.selection import select_policy
from dunning.store import NotFoundError


def policy_for(services: Services, view: AccountView, case_id: str | None = None) -> Policy:
    """The policy version a case runs on (it keeps the version it started with),
    or for an account without that case, the policy its rules select now."""
    case = next((c for c in view.cases if c.case_id == case_id), None)
    if case is None and case_id is not None:
        raise NotFoundError(f"case {case_id} does not exist")
    if case is not None:
        return services.store.get_policy_version(case.policy_id, case.policy_version)
    book = services.store.load_policy_book()
    currency = view.account.currency
    balance = sum((i.open_amount for i in view.invoices if i.currency == currency), Decimal(0))
    return select_policy(
        view.account, balance, book.rules, book.policies, book.default_policy_id
    ).policy
