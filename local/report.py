"""The demo's output: a summary on the terminal and a report folder.

The folder holds what a newcomer wants to look at: the messages that went
out (emails as .eml files, SMS and webhooks as text), CSV exports of cases and
actions, two charts (open cases per level over time, money recovered over
time) as PNG, and one HTML page that shows it all with a few timelines.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from dunning.reports import PortfolioSummary, actions_csv, cases_csv, summarize
from local.demo import REVISION_DAYS_SOONER, REVISION_LEAD, DemoResult

SAMPLE_TIMELINES = 3


def _events_by_account(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        if item.get("type", {}).get("S") == "event":
            body = json.loads(item["body"]["S"])
            events[body["account_id"]].append({"sk": item["SK"]["S"], **body})
    for rows in events.values():
        rows.sort(key=lambda e: e["sk"])
    return events


def revision_effect(result: DemoResult) -> tuple[int, int, int] | None:
    """What the policy revision did: the cases it moved up a level at the first
    run after it (customers already scheduled, decided again at once), the
    level entries on the new version in all, and the cases that end on it."""
    if result.revision is None:
        return None
    at, policy_id, version = result.revision
    first_run = at + REVISION_LEAD
    at_once = entries = on_version = 0
    for item in result.items:
        kind = item.get("type", {}).get("S")
        if kind == "event":
            body = json.loads(item["body"]["S"])
            data = body.get("data") or {}
            if body["kind"] != "level_entered" or data.get("policy_id") != policy_id:
                continue
            if data.get("policy_version") != version:
                continue
            entries += 1
            at_once += datetime.fromisoformat(body["at"].replace("Z", "+00:00")) == first_run
        elif kind == "case":
            case = json.loads(item["body"]["S"])
            on_version += case["policy_id"] == policy_id and case["policy_version"] == version
    return at_once, entries, on_version


def sample_accounts(result: DemoResult, events: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Accounts whose timelines tell the demo's stories: a broken promise, the
    bounced cheque, the fraud review (whichever exist)."""
    chosen: list[str] = []
    broken = next(
        (a for a, rows in events.items() if any(e["kind"] == "promise_broken" for e in rows)),
        None,
    )
    for account in (broken, result.bounced, result.fraud):
        if account and account not in chosen:
            chosen.append(account)
    for account, _rows in sorted(events.items(), key=lambda kv: -len(kv[1])):
        if len(chosen) >= SAMPLE_TIMELINES:
            break
        if account not in chosen:
            chosen.append(account)
    return chosen[:SAMPLE_TIMELINES]


def timeline_lines(rows: list[dict[str, Any]], limit: int = 25) -> list[str]:
    lines = []
    for e in rows[:limit]:
        data = e.get("data") or {}
        why = ""
        explanation = data.get("explanation")
        if explanation:
            why = "; ".join(r["message"] for r in explanation["reasons"][:2])
        detail = data.get("reason") or data.get("template") or data.get("level_name") or ""
        text = f"{e['at'][:16].replace('T', ' ')}  {e['kind']:<18} {detail}"
        if why:
            text += f"  ({why})"
        lines.append(text.rstrip())
    return lines


def sample_timelines(result: DemoResult) -> dict[str, list[str]]:
    """The sample accounts' timelines (up to 25 lines each), from one pass over
    the audit events (a demo holds tens of thousands)."""
    events = _events_by_account(result.items)
    return {a: timeline_lines(events.get(a, [])) for a in sample_accounts(result, events)}


def print_summary(
    result: DemoResult,
    summary: PortfolioSummary,
    timelines: dict[str, list[str]] | None = None,
) -> None:
    cfg = result.config
    print()
    print(
        f"Dunning demo: {cfg.accounts} accounts, {cfg.days} days from {cfg.start.date()}, "
        f"{result.runs} scheduled runs, {result.api_calls} API calls, "
        f"{result.seconds:.0f} s"
    )
    print("\nCases by status and level")
    by_status: dict[str, dict[int, int]] = defaultdict(dict)
    for c in summary.cases:
        by_status[c.status][c.level] = c.count
    for status, levels in sorted(by_status.items()):
        cells = ", ".join(f"L{level}: {n}" for level, n in sorted(levels.items()))
        print(f"  {status:<18} {sum(levels.values()):5d}   {cells}")
    print("\nMoney per currency           outstanding        recovered")
    currencies = sorted(set(summary.outstanding) | set(summary.recovered_amount))
    for cur in currencies:
        print(
            f"  {cur:<24} {summary.outstanding.get(cur, '0'):>14}   "
            f"{summary.recovered_amount.get(cur, '0'):>14}"
        )
    print(
        f"  recovered cases: {summary.recovered_cases}, "
        f"payments on dunned invoices: {summary.recovered_payments}"
    )
    print(f"\nPromises to pay: {summary.promises_kept} kept, {summary.promises_broken} broken")
    print("\nActions per channel and outcome")
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for a in summary.actions:
        table[a.channel][a.outcome] = a.count
    for channel, outcomes in sorted(table.items()):
        cells = ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items()))
        print(f"  {channel:<10} {cells}")
    print(
        f"\nSent: {len(result.emails)} emails, {len(result.sms)} SMS, "
        f"{len(result.webhooks)} webhooks (signed; "
        f"{sum(1 for w in result.webhooks if w.verified)} verified by the receiver)"
    )
    stories = {
        "bounced cheque": result.bounced,
        "fraud review": result.fraud,
        "excluded account": result.excluded,
    }
    print("Stories: " + ", ".join(f"{k} {v}" for k, v in stories.items() if v))
    effect = revision_effect(result)
    if result.revision is not None and effect is not None:
        at, policy_id, version = result.revision
        at_once, entries, on_version = effect
        print(
            f"Policy revision: {policy_id} v{version} activated on {at.date()} (every step "
            f"{REVISION_DAYS_SOONER} days sooner, running cases included); the next run "
            f"decided every owing "
            f"customer again: {at_once} cases entered a level at once, {entries} level "
            f"entries on v{version} in all, {on_version} cases on v{version} at the end"
        )
    for account, lines in (timelines or sample_timelines(result)).items():
        print(f"\nTimeline of {account}")
        for line in lines[:18]:
            print(f"  {line}")


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 (loaded only to draw the report)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _charts(result: DemoResult, out: Path) -> list[str]:
    plt = _pyplot()
    names: list[str] = []
    days = [d for d, _ in result.levels]
    levels = sorted({lv for _, counts in result.levels for lv in counts})
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.stackplot(
        days,
        [[counts.get(lv, 0) for _, counts in result.levels] for lv in levels],
        labels=[f"level {lv}" if lv else "opened" for lv in levels],
    )
    ax.set_title("Open cases per level over time")
    ax.set_ylabel("cases")
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out / "cases_per_level.png", dpi=110)
    plt.close(fig)
    names.append("cases_per_level.png")

    per_currency: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for day, currency, amount in result.recovered:
        per_currency[currency][day] += amount
    if per_currency:
        currencies = sorted(per_currency)
        fig, axes = plt.subplots(1, len(currencies), figsize=(3.2 * len(currencies), 3.4))
        axes_list = list(axes) if len(currencies) > 1 else [axes]
        for ax, cur in zip(axes_list, currencies, strict=True):
            total = Decimal(0)
            xs, ys = [], []
            for day in days:
                total += per_currency[cur].get(day, Decimal(0))
                xs.append(day)
                ys.append(float(total))
            ax.plot(xs, ys)
            ax.set_title(f"recovered {cur}")
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.suptitle("Money recovered on overdue invoices (cumulative)")
        fig.tight_layout()
        fig.savefig(out / "recovered.png", dpi=110)
        plt.close(fig)
        names.append("recovered.png")
    return names


def write_report(
    result: DemoResult,
    summary: PortfolioSummary,
    out: Path,
    timelines: dict[str, list[str]] | None = None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    mail_dir = out / "emails"
    mail_dir.mkdir(exist_ok=True)
    for n, eml in enumerate(result.emails):
        (mail_dir / f"{n:05d}.eml").write_text(eml, encoding="utf-8")
    (out / "sms.txt").write_text(
        "".join(f"{number}\t{text}\n" for _, number, text in result.sms), encoding="utf-8"
    )
    (out / "webhooks.jsonl").write_text(
        "".join(
            json.dumps({"path": w.path, "verified": w.verified, "body": w.json()}) + "\n"
            for w in result.webhooks
        ),
        encoding="utf-8",
    )
    (out / "actions.csv").write_text(actions_csv(result.items), encoding="utf-8")
    (out / "cases.csv").write_text(cases_csv(result.items), encoding="utf-8")
    (out / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    charts = _charts(result, out)
    timelines_html = "".join(
        f"<h3>{html.escape(a)}</h3><pre>{html.escape(chr(10).join(lines))}</pre>"
        for a, lines in (timelines or sample_timelines(result)).items()
    )
    rows = "".join(
        f"<tr><td>{html.escape(c.status)}</td><td>{c.level}</td><td>{c.count}</td></tr>"
        for c in summary.cases
    )
    money = "".join(
        f"<tr><td>{cur}</td><td>{summary.outstanding.get(cur, '0')}</td>"
        f"<td>{summary.recovered_amount.get(cur, '0')}</td></tr>"
        for cur in sorted(set(summary.outstanding) | set(summary.recovered_amount))
    )
    actions = "".join(
        f"<tr><td>{a.channel}</td><td>{a.outcome}</td><td>{a.count}</td></tr>"
        for a in summary.actions
    )
    cfg = result.config
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dunning demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
pre{{background:#f6f6f6;padding:8px;font-size:12px}}</style></head><body>
<h1>Dunning demo</h1>
<p>{cfg.accounts} accounts, {cfg.days} days from {cfg.start.date()}, {result.runs} scheduled runs,
{result.api_calls} API calls, {result.seconds:.0f} s. Promises to pay: {summary.promises_kept}
kept, {summary.promises_broken} broken. Sent {len(result.emails)} emails
(<a href="emails/">emails/</a>), {len(result.sms)} SMS (<a href="sms.txt">sms.txt</a>),
{len(result.webhooks)} webhooks (<a href="webhooks.jsonl">webhooks.jsonl</a>).
Exports: <a href="cases.csv">cases.csv</a>, <a href="actions.csv">actions.csv</a>.</p>
{"".join(f'<img src="{c}" alt="{c}" style="max-width:100%">' for c in charts)}
<h2>Cases by status and level</h2>
<table><tr><th>status</th><th>level</th><th>cases</th></tr>{rows}</table>
<h2>Money</h2><table><tr><th>currency</th><th>outstanding</th><th>recovered</th></tr>{money}</table>
<h2>Actions</h2><table><tr><th>channel</th><th>outcome</th><th>count</th></tr>{actions}</table>
<h2>Timelines</h2>{timelines_html}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def report(result: DemoResult) -> PortfolioSummary:
    summary = summarize(result.items, result.end)
    timelines = sample_timelines(result)
    print_summary(result, summary, timelines)
    if result.config.out is not None:
        index = write_report(result, summary, result.config.out, timelines)
        print(f"\nReport: {index}")
    return summary
