"""`make bench`: every benchmark, then one table of their figures.

Each benchmark runs in its own process (its own moto, its own clock) and ends
with one `name: key=value ...` line; this collects those lines.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from datetime import UTC, datetime

BENCHMARKS = ("engine", "pipeline", "actions")


def run(name: str) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print(out, end="", flush=True)
    last = next(line for line in reversed(out.splitlines()) if line.startswith(f"{name}:"))
    figures = dict(pair.split("=", 1) for pair in last.split(":", 1)[1].split())
    return figures, time.monotonic() - started


def main() -> None:
    rows = []
    for name in BENCHMARKS:
        figures, seconds = run(name)
        rows += [(name, key, value) for key, value in figures.items()]
        rows.append((name, "wall_seconds", f"{seconds:.0f}"))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"\nBenchmarks, {stamp}, Python {platform.python_version()}, {platform.machine()}")
    width = max(len(k) for _, k, _ in rows)
    for name, key, value in rows:
        print(f"  {name:<9} {key:<{width}} {value:>12}")


if __name__ == "__main__":
    main()
