"""One place for logs, traces and metrics. No personal data in logs.

The metrics namespace and service name come from the environment that infra
sets (POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME).
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(log_uncaught_exceptions=True)
tracer = Tracer()
metrics = Metrics()


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Publish one EMF metric with its own dimensions, at once.

    `metrics.add_dimension` applies to every metric of the invocation's blob, so
    a metric split by channel, level or outcome goes out on its own.
    """
    if not value:
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=value) as metric:
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)
