"""Test-wide setup that must happen before any `dunning` module is imported.

In Lambda, a function's environment exists before its code is imported, and
Powertools reads its settings (namespace, service) when `dunning.observability`
builds its logger and metrics. The tests import that code long before a
handler runs, so the Powertools variables are set here first, as infra sets
them.
"""

from __future__ import annotations

import os

from hypothesis import settings

for _key, _value in {
    "POWERTOOLS_SERVICE_NAME": "dunning",
    "POWERTOOLS_METRICS_NAMESPACE": "Dunning",
    "POWERTOOLS_TRACE_DISABLED": "true",
}.items():
    os.environ.setdefault(_key, _value)

# The gate (`make test`, CI) draws the same examples on every run, so one commit
# always gets one verdict; `make explore` draws new ones, ten times as many
# (docs/decisions.md, 2026-12-07).
settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("DUNNING_HYPOTHESIS_PROFILE", "gate"))
