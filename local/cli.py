"""The `dunning` command: the product on your laptop, on an emulated AWS.

    dunning demo [--accounts N] [--days D] [--seed S] [--out DIR] [--workers W]
    dunning serve [--port P] [--state FILE]
    dunning evaluate --as-of 2026-11-03T08:00:00Z [--url URL]
    dunning deliver [--url URL]

`demo` runs months of dunning through the real handlers and prints what
happened; `serve` puts the API on 127.0.0.1 over the same emulation, with
local-only routes (`/local/...`) to run the schedule and see what was sent;
`evaluate` and `deliver` call those routes of a running server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from datetime import datetime
from pathlib import Path

# What a deployed function's environment says before its code loads: the
# demo's terminal shows the story, not every info line and metric.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
warnings.filterwarnings("ignore", message="No application metrics to publish")

from local.demo import DemoConfig, run_demo  # noqa: E402 (after the environment)

DEFAULT_URL = "http://127.0.0.1:8080"


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give an instant with a zone, e.g. 2026-11-03T08:00:00Z")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from local.report import report  # noqa: PLC0415 (matplotlib only when reporting)

    out = None if args.no_report else Path(args.out)
    cfg = DemoConfig(
        accounts=args.accounts,
        days=args.days,
        seed=args.seed,
        out=out,
        progress=not args.quiet,
        workers=args.workers,
    )
    metrics_log = (out / "metrics.jsonl") if out is not None else Path(os.devnull)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    print(
        f"Running {cfg.days} days of dunning for {cfg.accounts} accounts on an in-process AWS "
        "(moto): the real evaluator, channel functions and API ...",
        file=sys.stderr,
    )
    with metrics_log.open("w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        result = run_demo(cfg)
    report(result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from local.server import serve  # noqa: PLC0415

    return serve(args.port, Path(args.state) if args.state else None)


def _post(url: str, path: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(  # noqa: S310 (the local server, http on loopback)
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as err:
        print(err.read().decode(), file=sys.stderr)
        return 1
    except urllib.error.URLError as err:
        print(f"no dunning server at {url} ({err.reason}); start one with `dunning serve`")
        return 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    return _post(args.url, "/local/schedule", {"at": args.as_of.isoformat()})


def cmd_deliver(args: argparse.Namespace) -> int:
    return _post(args.url, "/local/deliver", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dunning", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="months of dunning on an emulated AWS, with a report")
    demo.add_argument("--accounts", type=int, default=DemoConfig.accounts)
    demo.add_argument("--days", type=int, default=DemoConfig.days)
    demo.add_argument("--seed", type=int, default=DemoConfig.seed)
    demo.add_argument("--out", default="report", help="report folder (default: report)")
    demo.add_argument(
        "--workers",
        type=int,
        default=DemoConfig.workers,
        help="processes, each an emulated AWS with its share of the accounts (1: one)",
    )
    demo.add_argument("--no-report", action="store_true", help="print the summary only")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=cmd_demo)
    serve = sub.add_parser("serve", help="the API on 127.0.0.1 over the emulation")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--state", help="load the state from this file and save it on exit")
    serve.set_defaults(run=cmd_serve)
    evaluate = sub.add_parser("evaluate", help="run the schedule of a running server")
    evaluate.add_argument("--as-of", type=_instant, required=True)
    evaluate.add_argument("--url", default=DEFAULT_URL)
    evaluate.set_defaults(run=cmd_evaluate)
    deliver = sub.add_parser("deliver", help="run the channel functions of a running server")
    deliver.add_argument("--url", default=DEFAULT_URL)
    deliver.set_defaults(run=cmd_deliver)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
