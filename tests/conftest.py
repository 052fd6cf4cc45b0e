"""Test-wide setup that must happen before any `dunning` module is imported.

In Lambda, a function's environment exists before its code is imported, and
Powertools reads its settings (namespace, service) when `dunning.observability`
builds its logger and metrics. The tests import that code long before a
handler runs, so the Powertools variables are set here first, as infra sets
them.
"""

from __future__ import annotations

import os

for _key, _value in {
    "POWERTOOLS_SERVICE_NAME": "dunning",
    "POWERTOOLS_METRICS_NAMESPACE": "Dunning",
    "POWERTOOLS_TRACE_DISABLED": "true",
}.items():
    os.environ.setdefault(_key, _value)
