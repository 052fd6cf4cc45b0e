"""The local run: the deployment emulated in-process on moto (see `local.cloud`).

Importing this package sets the Powertools environment a deployed function has
before its code loads (service name, metrics namespace, no X-Ray daemon).
"""

from __future__ import annotations

import os

for _key, _value in {
    "POWERTOOLS_SERVICE_NAME": "dunning",
    "POWERTOOLS_METRICS_NAMESPACE": "Dunning",
    "POWERTOOLS_TRACE_DISABLED": "true",
}.items():
    os.environ.setdefault(_key, _value)
