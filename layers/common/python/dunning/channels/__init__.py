"""Delivery channels: message templates, SMS, signed webhooks, the SSRF guard.

Pure code, no AWS: the channel Lambda handlers pass in what they read from the
store (action, account, invoices) and wire the results to SES, SNS or HTTP.

The submodules are imported on their own (`dunning.channels.templates`,
`.sms`, `.webhook`, `.ssrf`) and this package does not import them, so the
webhook function never loads Jinja or Babel at cold start.
"""

from __future__ import annotations

from collections.abc import Iterable

from dunning.model import Action, Invoice, InvoiceStatus


def scope_invoices(
    action: Action, invoices: Iterable[Invoice], *, open_only: bool = True
) -> list[Invoice]:
    """The invoices an action is about, oldest due date first.

    The action's `invoice_ids` name its scope (all of a customer's overdue
    invoices in customer mode, one invoice in invoice mode); when it names none,
    every invoice given counts. With `open_only`, invoices paid (or otherwise
    settled) since the action was queued are left out of a message.
    """
    wanted = set(action.invoice_ids)
    chosen = [
        inv
        for inv in invoices
        if (not wanted or inv.invoice_id in wanted)
        and (not open_only or (inv.status is InvoiceStatus.OPEN and inv.open_amount > 0))
    ]
    chosen.sort(key=lambda inv: (inv.due_date, inv.invoice_id))
    return chosen


__all__ = ["scope_invoices"]
