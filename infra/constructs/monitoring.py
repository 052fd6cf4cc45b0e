"""Operations: the dashboard and the alarms, from AWS metrics and the functions' EMF metrics.

The functions publish EMF metrics in the `Dunning` namespace with the
Powertools `service` dimension (one service name for the stack). Metrics with
per-channel, per-level or per-outcome dimensions are drawn with SEARCH
expressions, so a new level or currency appears without a change here.

Alarms go to one KMS-encrypted SNS topic (plus an email subscription when
`alarm_email` is set): a message in any DLQ, a queue older than the send
window, a function error, an evaluation run that did not happen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import METRICS_NAMESPACE, SERVICE_NAME, StageConfig
from infra.constructs.function_factory import DunningFunction
from infra.constructs.queues import QueueWithDlq

SERVICE = {"service": SERVICE_NAME}
FIVE_MINUTES = Duration.minutes(5)
HOUR = Duration.hours(1)
WIDTH = 24
OUTCOMES = ("delivered", "failed", "skipped", "retried")
WORKER_COUNTS = ("CasesEvaluated", "LevelChanges", "CasesRecovered", "ApprovalsRequested")
WORKER_HEALTH = (
    "ConflictsRetried",
    "OutboxResent",
    "Continuations",
    "DecisionsTooLarge",
    "AccountsReviewed",  # a run after a change of the policy book
    "DueTimesMoved",
)


def emf(
    name: str, statistic: str = "Sum", period: Duration = FIVE_MINUTES, *, graph: bool = True
) -> cw.Metric:
    """A metric the functions publish with the service dimension only (labelled in graphs)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map=SERVICE,
        statistic=statistic,
        period=period,
        label=name if graph else None,
    )


def search(
    name: str,
    dimensions: Sequence[str],
    *,
    label: str,
    statistic: str = "Sum",
    period: Duration = FIVE_MINUTES,
    where: str = "",
) -> cw.MathExpression:
    """Every series of `name` over its dimension set (plus `service`), optionally filtered."""
    schema = ",".join([METRICS_NAMESPACE, *sorted({*dimensions, "service"})])
    query = f'{{{schema}}} MetricName="{name}" service="{SERVICE_NAME}" {where}'.strip()
    return cw.MathExpression(
        expression=f"SEARCH('{query}', '{statistic}', {int(period.to_seconds())})",
        using_metrics={},
        label=label,
        period=period,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions: Sequence[DunningFunction],
        queues: Sequence[QueueWithDlq],
        extra_dlqs: Mapping[str, sqs.IQueue],
        table: dynamodb.ITable,
        api: apigw.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"dunning {config.stage}: encryption of the alarm topic",
            enable_key_rotation=True,
        )
        # CloudWatch publishes the alarms: SNS encrypts them with this key on its behalf.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublishEncrypted",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"dunning {config.stage} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarms: list[cw.Alarm] = []

        # Messages in a DLQ: something failed every retry and needs a person. Every
        # DLQ (the work queues' and the schedules') has an alarm and a line on the
        # dashboard's DLQ graph.
        self.dlqs: list[tuple[str, sqs.IQueue]] = [(q.name, q.dlq) for q in queues]
        self.dlqs += list(extra_dlqs.items())
        for name, dlq in self.dlqs:
            self._alarm(
                f"{name.capitalize()}DlqNotEmpty",
                dlq.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=Duration.minutes(1)
                ),
                threshold=0,
                comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                description=f"{dlq.queue_name}: messages that failed every retry",
            )
        # Work older than the send window: consumers are failing or starved.
        for q in queues:
            self._alarm(
                f"{q.name.capitalize()}QueueTooOld",
                q.queue.metric_approximate_age_of_oldest_message(
                    statistic="Maximum", period=FIVE_MINUTES
                ),
                threshold=config.send_window_seconds,
                comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                description=f"{q.name} queue: oldest message beyond the send window",
            )
        for fn in functions:
            self._alarm(
                f"{fn.spec.name.capitalize()}Errors",
                fn.function.metric_errors(statistic="Sum", period=FIVE_MINUTES),
                threshold=0,
                comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                description=f"{fn.spec.name} function errors",
            )
        # No evaluation for two schedule periods (missing data is a missing run).
        window = Duration.minutes(2 * config.schedule_rate_minutes)
        self.run_missing = self._alarm(
            "EvaluationRunMissing",
            emf("RunsDispatched", period=window, graph=False),
            threshold=1,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            missing=cw.TreatMissingData.BREACHING,
            description="no evaluation run was dispatched for two schedule periods",
        )
        self._alarm(
            "DecisionTooLarge",
            emf("DecisionsTooLarge", graph=False),
            threshold=0,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description="an account's decision did not fit one transaction: it stays undunned",
        )
        self._alarm(
            "Api5xx",
            api.metric_server_error(statistic="Sum", period=FIVE_MINUTES),
            threshold=5,
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            description="the API answered 5xx five times or more in five minutes",
        )

        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"dunning-{config.stage}",
            default_interval=Duration.days(7),
        )
        self._business_widgets()
        self._operations_widgets(functions, queues, table, api)

    def _alarm(
        self,
        construct_id: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        comparison: cw.ComparisonOperator,
        description: str,
        missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
    ) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=1,
            treat_missing_data=missing,
            alarm_description=f"dunning {self.config.stage}: {description}",
        )
        action = cw_actions.SnsAction(self.topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        self.alarms.append(alarm)
        return alarm

    def _business_widgets(self) -> None:
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown="# Dunning: the portfolio\nGauges from the scheduled reporter (every "
                "`report_rate_minutes`); deliveries by channel, level and outcome.",
                width=WIDTH,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Open cases by status and level",
                left=[
                    search(
                        "OpenCases", ["status", "level"], label="", statistic="Maximum", period=HOUR
                    )
                ],
                width=12,
                stacked=True,
            ),
            cw.GraphWidget(
                title="Accounts due and not yet evaluated",
                left=[emf("DueBacklog", "Maximum", HOUR)],
                width=6,
            ),
            cw.GraphWidget(
                title="Promises to pay",
                left=[emf("PromisesKept", "Maximum", HOUR), emf("PromisesBroken", "Maximum", HOUR)],
                width=6,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Outstanding amount by currency",
                left=[
                    search(
                        "OutstandingAmount",
                        ["currency"],
                        label="",
                        statistic="Maximum",
                        period=HOUR,
                    )
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Recovered amount by currency",
                left=[
                    search(
                        "RecoveredAmount", ["currency"], label="", statistic="Maximum", period=HOUR
                    )
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            *(
                cw.GraphWidget(
                    title=f"Actions {outcome} (by channel and level)",
                    left=[
                        search(
                            "ActionOutcomes",
                            ["channel", "level", "outcome"],
                            label="",
                            where=f'outcome="{outcome}"',
                        )
                    ],
                    width=6,
                    stacked=True,
                )
                for outcome in OUTCOMES
            )
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Actions queued by channel",
                left=[search("ActionsQueued", ["channel"], label="")],
                width=12,
            ),
            cw.GraphWidget(
                title="Evaluation",
                left=[emf(name) for name in WORKER_COUNTS],
                width=12,
            ),
        )

    def _operations_widgets(
        self,
        functions: Sequence[DunningFunction],
        queues: Sequence[QueueWithDlq],
        table: dynamodb.ITable,
        api: apigw.RestApi,
    ) -> None:
        self.dashboard.add_widgets(
            cw.TextWidget(markdown="# Operations", width=WIDTH, height=1),
            cw.AlarmStatusWidget(
                title="Alarms",
                alarms=list(self.alarms),
                width=WIDTH,
                height=4,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Runs dispatched",
                left=[emf("RunsDispatched")],
                width=8,
            ),
            cw.GraphWidget(
                title="Evaluator retries and continuations",
                left=[emf(name) for name in WORKER_HEALTH],
                width=8,
            ),
            cw.GraphWidget(
                title="Deliveries retried (by channel)",
                left=[
                    search(
                        "ActionOutcomes",
                        ["channel", "level", "outcome"],
                        label="",
                        where='outcome="retried"',
                    )
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                left=[
                    q.queue.metric_approximate_number_of_messages_visible(
                        label=q.name, statistic="Maximum", period=FIVE_MINUTES
                    )
                    for q in queues
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Age of oldest message (s)",
                left=[
                    q.queue.metric_approximate_age_of_oldest_message(
                        label=q.name, statistic="Maximum", period=FIVE_MINUTES
                    )
                    for q in queues
                ],
                left_annotations=[
                    cw.HorizontalAnnotation(
                        value=self.config.send_window_seconds, label="send window"
                    )
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Dead-letter queues",
                left=[
                    dlq.metric_approximate_number_of_messages_visible(
                        label=f"{name} DLQ", statistic="Maximum", period=FIVE_MINUTES
                    )
                    for name, dlq in self.dlqs
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Function errors",
                left=[
                    fn.function.metric_errors(label=fn.spec.name, period=FIVE_MINUTES)
                    for fn in functions
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Function duration p95 (ms)",
                left=[
                    fn.function.metric_duration(
                        label=fn.spec.name, statistic="p95", period=FIVE_MINUTES
                    )
                    for fn in functions
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Function throttles",
                left=[
                    fn.function.metric_throttles(label=fn.spec.name, period=FIVE_MINUTES)
                    for fn in functions
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors",
                left=[
                    api.metric_count(label="requests", period=FIVE_MINUTES),
                    api.metric_client_error(label="4xx", period=FIVE_MINUTES),
                    api.metric_server_error(label="5xx", period=FIVE_MINUTES),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="API latency p95 (ms)",
                left=[
                    api.metric_latency(label="latency", statistic="p95", period=FIVE_MINUTES),
                    api.metric_integration_latency(
                        label="integration", statistic="p95", period=FIVE_MINUTES
                    ),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Table capacity consumed",
                left=[
                    table.metric_consumed_read_capacity_units(
                        label="read units", statistic="Sum", period=FIVE_MINUTES
                    ),
                    table.metric_consumed_write_capacity_units(
                        label="write units", statistic="Sum", period=FIVE_MINUTES
                    ),
                ],
                width=8,
            ),
        )
