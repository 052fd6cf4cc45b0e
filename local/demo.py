"""`dunning demo`: months of dunning on an emulated AWS, in a few minutes.

The whole product runs in-process on moto: the stack of `local.cloud`, the
real handlers (dispatcher, shard worker, channel functions, API), a webhook
receiver on 127.0.0.1. The demo plays the outside world against it:

- the **billing system** creates accounts, sends monthly invoices and records
  payments (and one bounced cheque) through the API: the invoices of a moment,
  and its payments, in batches (`POST /invoices/batch`, `/payments/batch`);
- **customers** pay by their behaviour: on time, late, partly, after
  promising (kept or broken), or not at all;
- **collectors** record promises to pay when a case reaches its second level,
  approve (or reject) the harsh steps held for approval, open a fraud review;
- **EventBridge Scheduler** fires the evaluator every few hours of simulated
  time; the channel functions deliver what it queued.

Simulated time is the clock the functions read (`dunning.clock.use`) and the
instant each scheduled run carries; nothing sleeps.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from email.message import EmailMessage
from enum import StrEnum
from pathlib import Path
from typing import Any

from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from dunning import aws, clock
from dunning.money import minor_unit
from dunning.store.scan import scan_items
from local.apigw import ApiClient, ApiResponse
from local.cloud import LocalCloud
from local.portfolio import standard_calendar, standard_policies, standard_rules
from local.receiver import WebhookReceiver

START = datetime(2026, 9, 1, tzinfo=UTC)
# UTC: every zone's sending window (08:00-20:00 local) gets at least one run:
# Tokyo and Sydney at 00 and 08, Berlin and London at 08 and 16, New York at 16.
RUN_HOURS = (0, 8, 16)
REVISION_DAYS_SOONER = 2  # the small-business ladder's revision, half way through
# The outside world acts this long before a run (the revision included).
REVISION_LEAD = timedelta(minutes=10)
BATCH = 100  # invoices or payments per batch request (the API's limit)
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "Australia/Sydney")
CURRENCIES = {  # currency: (typical invoice, zone preference)
    "EUR": Decimal("89.90"),
    "USD": Decimal("120.00"),
    "JPY": Decimal("12800"),
    "GBP": Decimal("75.00"),
}
ZONE_CURRENCY = {
    "Europe/Berlin": "EUR",
    "America/New_York": "USD",
    "Asia/Tokyo": "JPY",
    "Europe/London": "GBP",
    "Australia/Sydney": "USD",
}
LOCALES = {
    "Europe/Berlin": ("de", "fr", "en"),
    "America/New_York": ("en",),
    "Asia/Tokyo": ("en",),
    "Europe/London": ("en",),
    "Australia/Sydney": ("en",),
}


class Behaviour(StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    PARTIAL = "partial"
    PROMISE_KEEPER = "promise_keeper"
    PROMISE_BREAKER = "promise_breaker"
    NEVER = "never"


MIX = (
    (Behaviour.ON_TIME, 0.45),
    (Behaviour.LATE, 0.22),
    (Behaviour.PARTIAL, 0.08),
    (Behaviour.PROMISE_KEEPER, 0.09),
    (Behaviour.PROMISE_BREAKER, 0.07),
    (Behaviour.NEVER, 0.09),
)


@dataclass
class Customer:
    account_id: str
    segment: str
    currency: str
    timezone: str
    locale: str
    behaviour: Behaviour
    bill_day: int  # day of the month invoices are issued
    amount: Decimal
    late_days: int
    invoices: list[tuple[str, date, Decimal]] = field(default_factory=list)
    paid: set[str] = field(default_factory=set)
    promised: set[str] = field(default_factory=set)  # case ids with a promise
    bounced: set[str] = field(default_factory=set)  # invoices whose payment bounced


@dataclass
class DemoConfig:
    accounts: int = 2000
    days: int = 120
    seed: int = 7
    out: Path | None = Path("report")
    shards: int = 2
    progress: bool = True
    start: datetime = START
    # Independent emulations, one process each, that split the portfolio (see
    # `run_demo`); 1 runs everything in this process.
    workers: int = 2


@dataclass
class DemoResult:
    config: DemoConfig
    customers: dict[str, Customer]
    items: list[dict[str, Any]]
    end: datetime
    seconds: float
    api_calls: int
    runs: int
    bounced: str | None
    fraud: str | None
    excluded: str | None
    holidays: frozenset[date]
    emails: list[str] = field(default_factory=list)  # as .eml files
    sms: list[tuple[str, str, str]] = field(default_factory=list)
    webhooks: list[Any] = field(default_factory=list)
    levels: list[tuple[date, dict[int, int]]] = field(default_factory=list)
    recovered: list[tuple[date, str, Decimal]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # When the small-business policy was revised, and its new version.
    revision: tuple[datetime, str, int] | None = None


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.monotonic()

    def show(self, done: int, note: str) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        elapsed = time.monotonic() - self.started
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r[{bar}] {done}/{self.total} days  {elapsed:5.0f}s  {note:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class World:
    """The outside world: billing system, customers and collectors, via the API."""

    def __init__(self, cfg: DemoConfig, stack: LocalCloud, part: int = 0, parts: int = 1) -> None:
        self.cfg = cfg
        self.stack = stack
        # This world plays its share of the customers: of each behaviour, every
        # `parts`-th one drawn (so each part gets the same mix, and about the same
        # work); the one-off stories (exclusion list, bounced cheque, fraud
        # review) belong to part 0.
        self.part = part
        self.parts = parts
        self.api = ApiClient(stack.functions["api"])
        self.rng = random.Random(cfg.seed)
        self.customers: dict[str, Customer] = {}
        self.calls = 0
        self.bounced: str | None = None
        self.fraud: str | None = None
        self.excluded: str | None = None
        self.payments: dict[str, list[tuple[str, Decimal]]] = {}  # account -> payment ids
        # The payments of the moment, in the order they were made, each with what
        # to do with its result (its status): sent in batches by `settle`.
        self.settlement: list[tuple[dict[str, Any], Callable[[int], None]]] = []
        self.kept: dict[str, tuple[date, Decimal]] = {}  # promise keepers: pay day, amount
        self.recovered: list[tuple[date, str, Decimal]] = []  # overdue money paid, by day
        self.revision: tuple[datetime, str, int] | None = None  # the policy version activated

    # ---------------------------------------------------------------- api

    def call(self, method: str, path: str, role: str, body: Any = None, **kw: Any) -> ApiResponse:
        self.calls += 1
        response = self.api.call(
            method, f"/v1{path}", role=role, user=f"demo-{role}", json_body=body, **kw
        )
        if response.status >= 500:
            raise RuntimeError(f"{method} {path}: {response.status} {response.text}")
        return response

    def batches(self, kind: str, items: list[dict[str, Any]]) -> list[int]:
        """`items` (invoices or payments, each with its account) through
        `POST /<kind>/batch`, `BATCH` at a time; each item's status, in order."""
        statuses: list[int] = []
        for start in range(0, len(items), BATCH):
            response = self.call(
                "POST", f"/{kind}/batch", "billing", {kind: items[start : start + BATCH]}
            )
            if response.status != 200:  # a malformed batch: the demo's own mistake
                raise RuntimeError(f"POST /{kind}/batch: {response.status} {response.text}")
            statuses += [result["status"] for result in response.json()["results"]]
        return statuses

    # -------------------------------------------------------- configuration

    def configure(self) -> None:
        calendar = standard_calendar()
        self.call(
            "PUT",
            f"/calendars/{calendar.calendar_id}",
            "admin",
            calendar.model_dump(mode="json"),
        )
        for policy in standard_policies():
            doc = policy.model_dump(mode="json")
            self.call("POST", f"/policies/{policy.policy_id}/versions", "admin", doc)
            self.call("POST", f"/policies/{policy.policy_id}/activate", "admin", {"version": 1})
        rules = [r.model_dump(mode="json") for r in standard_rules()]
        self.call(
            "PUT", "/selection-rules", "admin", {"rules": rules, "default_policy_id": "consumer"}
        )

    # ------------------------------------------------------------ customers

    def create_customers(self) -> None:
        segments = ("consumer", "consumer", "consumer", "business", "vip")
        drawn: Counter[Behaviour] = Counter()
        for i in range(self.cfg.accounts):
            zone = ZONES[self.rng.randrange(len(ZONES))]
            currency = ZONE_CURRENCY[zone]
            behaviour = self._behaviour()
            segment = segments[self.rng.randrange(len(segments))]
            base = CURRENCIES[currency]
            amount = (base * Decimal(self.rng.uniform(0.6, 2.5))).quantize(
                minor_unit(currency), rounding=ROUND_DOWN
            )
            customer = Customer(
                account_id=f"cust-{i:05d}",
                segment=segment,
                currency=currency,
                timezone=zone,
                locale=self.rng.choice(LOCALES[zone]),
                behaviour=behaviour,
                bill_day=1 + self.rng.randrange(28),
                amount=amount,
                late_days=self.rng.randint(5, 45),
            )
            drawn[behaviour] += 1
            if (drawn[behaviour] - 1) % self.parts != self.part:
                continue  # drawn all the same: a customer is the same in every split
            self.customers[customer.account_id] = customer
            self.call(
                "PUT",
                f"/accounts/{customer.account_id}",
                "billing",
                {
                    "name": f"Customer {i}",
                    "segment": segment,
                    "currency": currency,
                    "locale": customer.locale,
                    "timezone": zone,
                    "email": f"customer{i}@example.com",
                    "phone": f"+4915{i:08d}",
                },
            )
        # One excluded account: a key customer dunning must not touch.
        never = [c for c in self.customers.values() if c.behaviour is Behaviour.NEVER]
        if never and self.part == 0:
            self.excluded = never[0].account_id
            self.call(
                "PUT",
                "/exclusion-lists/key-accounts",
                "admin",
                {"name": "Key accounts", "account_ids": [self.excluded]},
            )

    def _behaviour(self) -> Behaviour:
        roll = self.rng.random()
        for behaviour, share in MIX:
            if roll < share:
                return behaviour
            roll -= share
        return Behaviour.ON_TIME

    # ---------------------------------------------------------- billing days

    def opening_balances(self) -> None:
        """What customers already owe when the demo starts: the invoices of the
        last two months that the late and non-paying ones have not paid."""
        start = self.cfg.start.date()
        invoices = [
            self._invoice(
                c, f"{c.account_id}-open", start - timedelta(days=self.rng.randint(1, 60))
            )
            for c in self.customers.values()
            if c.behaviour is not Behaviour.ON_TIME
        ]
        self.batches("invoices", invoices)

    def bill(self, day: date) -> None:
        """Invoices issued today (monthly, on each customer's bill day)."""
        invoices = [
            self._invoice(c, f"{c.account_id}-{day:%Y%m}", day)
            for c in self.customers.values()
            if day.day == c.bill_day
        ]
        self.batches("invoices", invoices)

    def _invoice(self, c: Customer, invoice_id: str, day: date) -> dict[str, Any]:
        """An invoice the billing system issues: the customer owes it; its batch item."""
        due = day + timedelta(days=14)
        c.invoices.append((invoice_id, due, c.amount))
        return {
            "account_id": c.account_id,
            "invoice_id": invoice_id,
            "currency": c.currency,
            "amount": f"{c.amount:f}",
            "issue_date": str(day),
            "due_date": str(due),
        }

    def pay(self, day: date, now: datetime) -> None:
        """Customers pay by their behaviour (sent by `settle`)."""
        for c in self.customers.values():
            for invoice_id, due, amount in c.invoices:
                if invoice_id in c.paid:
                    continue
                when = self._pay_day(c, due)
                if when is None or day < when:
                    continue
                if c.behaviour is Behaviour.PARTIAL and f"{invoice_id}/half" not in c.paid:
                    half = (amount / 2).quantize(minor_unit(c.currency), rounding=ROUND_DOWN)
                    self._payment(c, f"{invoice_id}-p1", half, now, invoice_id)
                    c.paid.add(f"{invoice_id}/half")
                    continue
                if c.behaviour is Behaviour.PARTIAL:
                    if day < when + timedelta(days=20):
                        continue
                    rest = amount - (amount / 2).quantize(
                        minor_unit(c.currency), rounding=ROUND_DOWN
                    )
                    self._payment(c, f"{invoice_id}-p2", rest, now, invoice_id)
                else:
                    again = "-again" if invoice_id in c.bounced else ""
                    self._payment(c, f"{invoice_id}-p{again}", amount, now, invoice_id)
                c.paid.add(invoice_id)

    def _pay_day(self, c: Customer, due: date) -> date | None:
        match c.behaviour:
            case Behaviour.ON_TIME:
                return due - timedelta(days=2)
            case Behaviour.LATE | Behaviour.PARTIAL:
                return due + timedelta(days=c.late_days)
            case Behaviour.PROMISE_KEEPER:
                return None  # pays what it promised, when it promised (see collect)
            case Behaviour.PROMISE_BREAKER:
                return due + timedelta(days=80)  # long after the broken promise
            case _:
                return None

    def _payment(
        self, c: Customer, payment_id: str, amount: Decimal, now: datetime, invoice_id: str
    ) -> None:
        def recorded(status: int) -> None:
            if status < 300:
                self.payments.setdefault(c.account_id, []).append((payment_id, amount))
                due = next((d for i, d, _ in c.invoices if i == invoice_id), None)
                if due is not None and due < now.date():
                    self.recovered.append((now.date(), c.currency, amount))

        body = {
            "account_id": c.account_id,
            "payment_id": payment_id,
            "currency": c.currency,
            "amount": f"{amount:f}",
            "received_at": now.isoformat(),
            "invoice_ids": [invoice_id],
        }
        self.settlement.append((body, recorded))

    def settle(self) -> None:
        """The billing system sends the payments of the moment, in batches, in the
        order they were made (`pay`, then `keep_promises`)."""
        pending, self.settlement = self.settlement, []
        statuses = self.batches("payments", [body for body, _ in pending])
        for (_, recorded), status in zip(pending, statuses, strict=True):
            recorded(status)

    def bounce_one(self, now: datetime) -> None:
        """The bank returns one cheque: the billing system reverses the payment."""
        if self.bounced is not None or self.part != 0:
            return
        for c in self.customers.values():
            if c.behaviour is Behaviour.LATE and self.payments.get(c.account_id):
                payment_id, _ = self.payments[c.account_id][-1]
                self.call(
                    "POST",
                    f"/accounts/{c.account_id}/payments/{payment_id}/reversal",
                    "billing",
                    {"reason": "cheque returned unpaid"},
                )
                self.bounced = c.account_id
                # The customer pays again a few weeks later.
                invoice_id = payment_id.removesuffix("-p")
                c.paid.discard(invoice_id)
                c.bounced.add(invoice_id)
                c.late_days += 21
                return

    def revise_policy(self, now: datetime) -> None:
        """An admin makes the small-business ladder two days sooner at every
        step, for the running cases too: the next run decides every owing
        customer again with it (the customers already scheduled included)."""
        body = self.call("GET", "/policies/business", "admin").json()["policy"]
        body.pop("version", None)
        for level in body["levels"]:
            level["days"] = level["days"] - REVISION_DAYS_SOONER
        body["apply_to_running_cases"] = True
        created = self.call("POST", "/policies/business/versions", "admin", body).json()
        version = created["version"]
        self.call("POST", "/policies/business/activate", "admin", {"version": version})
        self.revision = (now, "business", version)

    # ----------------------------------------------------------- collectors

    def collect(self, day: date, now: datetime) -> None:
        """A collector's morning: approvals, promises on cases at their second level,
        and one fraud review."""
        approvals = self.call("GET", "/approvals", "collector", query={"limit": "100"}).json()
        for item in approvals.get("items", []):
            approve = self.rng.random() < 0.85
            self.call(
                "POST",
                f"/accounts/{item['account_id']}/approvals/{item['approval_id']}/decision",
                "collector",
                {
                    "decision": "approve" if approve else "reject",
                    "reason": "reviewed by the collections team"
                    if approve
                    else "customer relationship: hold off",
                },
            )
        cursor: str | None = None
        while True:  # promises are offered when a case reaches its second level
            query = {"status": "active", "level": "2", "limit": "100"}
            if cursor:
                query["cursor"] = cursor
            page = self.call("GET", "/cases", "collector", query=query).json()
            for case in page["items"]:
                self._promise(case, day, now)
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if (
            self.fraud is None
            and self.part == 0
            and day >= self.cfg.start.date() + timedelta(days=30)
        ):
            candidates = self.call("GET", "/cases", "collector", query={"limit": "5"}).json()
            for case in candidates["items"]:
                if case["account_id"] == self.bounced:
                    continue  # one story per customer
                response = self.call(
                    "POST",
                    f"/accounts/{case['account_id']}/suspensions",
                    "collector",
                    {
                        "suspension_id": f"fraud-{case['case_id']}",
                        "case_id": case["case_id"],
                        "kind": "fraud_review",
                        "reason": "card reported stolen; checking the orders",
                    },
                )
                if response.status == 201:
                    self.fraud = case["account_id"]
                    break

    def _promise(self, case: dict[str, Any], day: date, now: datetime) -> None:
        c = self.customers.get(case["account_id"])
        if c is None or case["case_id"] in c.promised or case["level"] < 2:
            return
        if c.behaviour not in (Behaviour.PROMISE_KEEPER, Behaviour.PROMISE_BREAKER):
            return
        account = self.call("GET", f"/accounts/{c.account_id}", "collector").json()
        owed = Decimal(account["summary"]["overdue_amount"])
        if owed <= 0:
            return
        promised = day + timedelta(days=7)
        response = self.call(
            "POST",
            f"/accounts/{c.account_id}/promises",
            "collector",
            {
                "promise_id": f"promise-{case['case_id']}-{case['level']}",
                "case_id": case["case_id"],
                "amount": f"{owed:f}",
                "promised_date": str(promised),
                "note": "customer called the hotline",
            },
            headers={"If-Match": f'"{account["version"]}"'},
        )
        c.promised.add(case["case_id"])
        if response.status == 201 and c.behaviour is Behaviour.PROMISE_KEEPER:
            # Keeps it: pays everything overdue three days later.
            c.late_days = 0
            self.kept[c.account_id] = (promised - timedelta(days=4), owed)

    def keep_promises(self, day: date, now: datetime) -> None:
        for account_id, (when, owed) in list(self.kept.items()):
            if day < when:
                continue
            c = self.customers[account_id]
            open_ids = [i for i, _, _ in c.invoices if i not in c.paid]
            body = {
                "account_id": account_id,
                "payment_id": f"{account_id}-promise-{when:%Y%m%d}",
                "currency": c.currency,
                "amount": f"{owed:f}",
                "received_at": now.isoformat(),
            }
            recovered = (day, c.currency, owed)

            def kept(_status: int, entry: tuple[date, str, Decimal] = recovered) -> None:
                self.recovered.append(entry)  # paid in full, whatever the answer said

            self.settlement.append((body, kept))
            c.paid.update(open_ids)
            del self.kept[account_id]


OPEN_STATUSES = ("active", "suspended", "awaiting_approval")


def open_cases_by_level(stack: LocalCloud) -> dict[int, int]:
    """Open cases per level now: the lists index, keys only (one cheap query
    per status; the level is the first part of the sort key)."""
    counts: dict[int, int] = {}
    for status in OPEN_STATUSES:
        kwargs: dict[str, Any] = {
            "TableName": stack.table_name,
            "IndexName": "lists",
            "KeyConditionExpression": "list_pk = :p",
            "ExpressionAttributeValues": {":p": {"S": f"CASE#{status}"}},
            "ProjectionExpression": "list_sk",
        }
        while True:
            out = aws.dynamodb().query(**kwargs)
            for item in out.get("Items", []):
                level = int(item["list_sk"]["S"].split("#", 1)[0])
                counts[level] = counts.get(level, 0) + 1
            if not out.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return counts


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo and return what it produced (the caller reports).

    With `workers` > 1 the portfolio is split: each part is the whole product on
    its own emulated AWS (its own tables, queues, providers), with the same
    configuration and its share of the customers, run in its own process. The
    engine decides each account on its own, so the split changes no decision;
    it only uses the machine's cores (moto answers one request at a time). Part
    0 runs here, with the progress bar; the results are merged.
    """
    workers = max(1, min(cfg.workers, cfg.accounts))
    if workers == 1:
        return _run_part(cfg, 0, 1)
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=context) as pool:
        others = [
            pool.submit(_run_part_in_worker, replace(cfg, progress=False), part, workers)
            for part in range(1, workers)
        ]
        first = _run_part(cfg, 0, workers)
        parts = [first, *(f.result() for f in others)]
    return _merge(cfg, parts, time.monotonic() - started)


def _merge(cfg: DemoConfig, parts: list[DemoResult], seconds: float) -> DemoResult:
    first = parts[0]
    levels = []
    for same_day in zip(*(part.levels for part in parts), strict=True):
        total: Counter[int] = Counter()
        for _, counts in same_day:
            total.update(counts)
        levels.append((same_day[0][0], dict(total)))
    timings: Counter[str] = Counter()
    for part in parts:
        timings.update(part.timings)
    return DemoResult(
        config=cfg,
        customers={k: v for part in parts for k, v in part.customers.items()},
        items=[it for part in parts for it in part.items],
        end=first.end,
        seconds=seconds,
        api_calls=sum(part.api_calls for part in parts),
        runs=first.runs,
        bounced=first.bounced,
        fraud=first.fraud,
        excluded=first.excluded,
        holidays=first.holidays,
        emails=[m for part in parts for m in part.emails],
        sms=[m for part in parts for m in part.sms],
        webhooks=[w for part in parts for w in part.webhooks],
        levels=levels,
        recovered=sorted((r for part in parts for r in part.recovered), key=lambda r: r[0]),
        timings=dict(timings),
        revision=first.revision,
    )


def _run_part_in_worker(cfg: DemoConfig, part: int, parts: int) -> DemoResult:
    """A part in its own process: the functions' JSON logs and metrics (their
    stdout) go to `metrics-part<N>.jsonl` in the report folder, not the terminal."""
    log = cfg.out / f"metrics-part{part}.jsonl" if cfg.out is not None else Path(os.devnull)
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    with log.open("w", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)  # the loggers hold the stdout they found at import
        return _run_part(cfg, part, parts)


@contextmanager
def _long_lived_heap() -> Iterator[None]:
    """The garbage collector tuned for a process that holds a whole emulated AWS.

    moto keeps every item, message and email in Python objects, so the heap
    grows to millions of tracked objects and each full collection walks all of
    them, while little of what a request allocates lives in a cycle. Young
    collections run every 50,000 allocations instead of 700 (full ones become
    rare); `freeze` (called once the portfolio exists) moves what is alive to a
    generation no collection walks. Restored on exit. This is the harness's
    process, not a function's: a Lambda's heap is small.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _run_part(cfg: DemoConfig, part: int, parts: int) -> DemoResult:
    """One part of the portfolio on its own emulated AWS."""
    for key, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }.items():
        os.environ.setdefault(key, value)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    started = time.monotonic()
    now = cfg.start - timedelta(hours=1)  # the portfolio exists before the first run
    clock.use(lambda: now)
    aws.reset_clients()
    try:
        with _long_lived_heap(), mock_aws(), WebhookReceiver(clock=clock.now) as receiver:
            stack = LocalCloud(webhook_base=receiver.url(""), shards=cfg.shards).create()
            for endpoint, secret in stack.secrets.items():
                receiver.secrets[f"/{endpoint}"] = [secret]
            world = World(cfg, stack, part, parts)
            world.configure()
            world.create_customers()
            world.opening_balances()
            gc.freeze()
            timings: dict[str, float] = {}

            @contextmanager
            def timer(phase: str) -> Iterator[None]:
                t0 = time.perf_counter()
                yield
                timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0

            with timer("setup"):
                pass
            progress = Progress(cfg.days, cfg.progress)
            runs = 0
            levels: list[tuple[date, dict[int, int]]] = []
            for d in range(cfg.days):
                day = (cfg.start + timedelta(days=d)).date()
                for hour in RUN_HOURS:
                    run_at = cfg.start + timedelta(days=d, hours=hour)
                    # The outside world acts in the minutes before the run.
                    now = run_at - REVISION_LEAD
                    with timer("billing"):
                        if hour == RUN_HOURS[0]:
                            world.bill(day)
                        if hour == 8:
                            world.pay(day, now)
                            world.keep_promises(day, now)
                            world.settle()
                            if d == cfg.days // 3:
                                world.bounce_one(now)
                            if d == cfg.days // 2:
                                world.revise_policy(now)
                    with timer("collectors"):
                        if hour == 16:
                            world.collect(day, now)
                    now = run_at
                    with timer("evaluate"):
                        stack.evaluate(now)
                    with timer("deliver"):
                        stack.deliver()
                    runs += 1
                levels.append((day, open_cases_by_level(stack)))
                progress.show(d + 1, f"{world.calls} API calls, {runs} runs")
            progress.close()
            end = now
            items = list(scan_items(stack.store()))
            emails, sms = _delivered()
            return DemoResult(
                config=cfg,
                customers=world.customers,
                items=items,
                end=end,
                seconds=time.monotonic() - started,
                api_calls=world.calls,
                runs=runs,
                bounced=world.bounced,
                fraud=world.fraud,
                excluded=world.excluded,
                holidays=standard_calendar().exclusion_dates,
                emails=emails,
                sms=sms,
                webhooks=list(receiver.received),
                levels=levels,
                recovered=world.recovered,
                timings=timings,
                revision=world.revision,
            )
    finally:
        clock.use(None)


def _delivered() -> tuple[list[str], list[tuple[str, str, str]]]:
    """What the emulated providers sent: SES's outbox and SNS's SMS log (the
    local stand-ins for inboxes and phones). Emails are rendered as .eml here,
    in each part's own process, so the parts render theirs side by side."""
    region = os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")
    emails = [_eml(m) for m in ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages]
    sms = [
        (mid, number, text)
        for mid, (number, text) in sns_backends[DEFAULT_ACCOUNT_ID][region].sms_messages.items()
    ]
    return emails, sms


def _eml(message: Any) -> str:
    """One SES message as the text of an .eml file."""
    msg = EmailMessage()
    msg["From"] = message.source
    msg["To"] = ", ".join(message.destinations.get("ToAddresses", []))
    msg["Subject"] = message.subject
    msg.set_content(message.body)
    return msg.as_string()
