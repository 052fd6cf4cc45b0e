"""One place for logs, traces and metrics. No personal data in logs.

The metrics namespace and service name come from the environment that infra
sets (POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(log_uncaught_exceptions=True)
tracer = Tracer()
metrics = Metrics()
