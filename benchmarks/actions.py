"""Actions benchmark: CPU and AWS requests per delivered action, per channel, on moto.

Builds the local stack (`local.cloud.LocalCloud`: the same tables, queues and
function wiring as infra), ingests accounts that reach an email level, an SMS
level and a webhook level at one scheduled instant, runs the evaluator, then
lets the real channel functions drain their queues through the local event
source mapping. Only the delivery phase is measured: CPU time of the process
(`time.process_time`, the handlers' work plus moto's) and AWS requests counted
by botocore's event hooks (`dunning.aws.RequestCounter`), claims and outcomes included.

Run: `.venv/bin/python -m benchmarks.actions [--accounts N]`.
Last line: `actions: ddb_requests_per_email=<x> provider_calls_per_email=<x> ms_per_action=<x>`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from moto import mock_aws

from dunning import aws, clock
from dunning.model import Account, Invoice
from local.cloud import LOCAL_ENV, LocalCloud
from local.portfolio import seed_book
from local.receiver import WebhookReceiver

AS_OF = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)  # a Tuesday, 11:00 in Berlin
# Days overdue that reach, in the consumer policy: reminder (email),
# avoid suspension (SMS), suspension (webhook + email).
LEVELS = {"email": 10, "sms": 40, "webhook": 45}


def seed(stack: LocalCloud, per_channel: int) -> None:
    store = stack.store()
    seed_book(store, AS_OF)
    before = AS_OF - timedelta(days=1)
    for channel, days in LEVELS.items():
        for i in range(per_channel):
            account_id = f"{channel}-{i:05d}"
            store.upsert_account(
                Account(
                    account_id=account_id,
                    name=f"Customer {i}",
                    currency="EUR",
                    locale=("en", "de", "fr")[i % 3],
                    timezone="Europe/Berlin",
                    email=f"c{i}@example.com",
                    phone=f"+4915{i:08d}",
                ),
                before,
                "billing",
            )
            due = AS_OF.date() - timedelta(days=days)
            store.upsert_invoice(
                Invoice(
                    invoice_id=f"{account_id}-1",
                    account_id=account_id,
                    currency="EUR",
                    amount=Decimal("250.00"),
                    open_amount=Decimal("250.00"),
                    issue_date=due - timedelta(days=30),
                    due_date=due,
                ),
                before,
                "billing",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200, help="accounts per channel")
    args = parser.parse_args()
    logging.getLogger("dunning").setLevel(logging.WARNING)
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # no EMF lines on the terminal
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    with mock_aws(), WebhookReceiver(clock=clock.now) as receiver:
        clock.use(lambda: AS_OF + timedelta(minutes=1))
        stack = LocalCloud(webhook_base=receiver.url("")).create()
        for endpoint, secret in stack.secrets.items():
            receiver.secrets[f"/{endpoint}"] = [secret]
        seed(stack, args.accounts)
        stack.evaluate(AS_OF)
        queued = {q: stack.depth(q) for q in ("email", "sms", "webhook")}
        rows = []
        total_cpu = 0.0
        total_actions = 0
        email_ddb = email_provider = 0
        for queue in ("email", "sms", "webhook"):
            with aws.RequestCounter() as counter:
                t0 = time.process_time()
                result = stack.sources[queue].drain()
                cpu = time.process_time() - t0
            n = queued[queue]
            total_cpu += cpu
            total_actions += n
            ddb = counter.total("dynamodb.")
            provider = (
                counter.total("ses.SendEmail")
                if queue == "email"
                else counter.total("sns.Publish")
                if queue == "sms"
                else sum(1 for _ in receiver.received)
            )
            if queue == "email":
                email_ddb, email_provider = ddb, provider
            rows.append((queue, n, result.failed, ddb / n, provider / n, 1000 * cpu / n, counter))
        clock.use(None)
    print(
        f"{'channel':8} {'actions':>7} {'failed':>6} {'ddb/act':>8} {'prov/act':>8} {'ms/act':>7}"
    )
    for queue, n, failed, ddb_per, prov_per, ms, counter in rows:
        print(f"{queue:8} {n:7d} {failed:6d} {ddb_per:8.2f} {prov_per:8.2f} {ms:7.2f}")
        ops = ", ".join(f"{op}={c}" for op, c in sorted(counter.counts.items()))
        print(f"         requests: {ops}")
    print(
        f"actions: ddb_requests_per_email={email_ddb / queued['email']:.2f} "
        f"provider_calls_per_email={email_provider / queued['email']:.2f} "
        f"ms_per_action={1000 * total_cpu / total_actions:.2f}"
    )


if __name__ == "__main__":
    main()
