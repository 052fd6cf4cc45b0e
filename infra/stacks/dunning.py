"""The dunning stack: composes the constructs, creates nothing itself."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.actions import Actions, pascal
from infra.constructs.api import Api
from infra.constructs.data import Data
from infra.constructs.evaluate import Evaluate
from infra.constructs.function_factory import FunctionFactory
from infra.constructs.layer import CommonLayer
from infra.constructs.monitoring import Monitoring


class DunningStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = Data(self, "Data", config=config)
        self.layer = CommonLayer(self, "Layer", layer_dir=config.layer_dir)
        self.factory = FunctionFactory(layer=self.layer.layer, config=config)
        self.actions = Actions(self, "Actions", config=config, data=self.data, factory=self.factory)
        self.evaluate = Evaluate(
            self,
            "Evaluate",
            config=config,
            data=self.data,
            factory=self.factory,
            channel_queues={c: q.queue for c, q in self.actions.queues.items()},
        )
        self.api = Api(self, "Api", config=config, data=self.data, factory=self.factory)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            functions=self.factory.functions,
            queues=[self.evaluate.shards, *self.actions.queues.values()],
            extra_dlqs={"schedule": self.evaluate.schedule_dlq},
            table=self.data.table,
            api=self.api.api,
        )

        CfnOutput(self, "ApiUrl", value=self.api.api.url)
        CfnOutput(self, "UserPoolId", value=self.api.user_pool.user_pool_id)
        CfnOutput(self, "BillingClientId", value=self.api.billing_client.user_pool_client_id)
        CfnOutput(self, "ConsoleClientId", value=self.api.console_client.user_pool_client_id)
        CfnOutput(self, "TokenEndpoint", value=f"{self.api.domain.base_url()}/oauth2/token")
        CfnOutput(self, "TableName", value=self.data.table.table_name)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(
            self,
            "DashboardUrl",
            value=(
                f"https://console.aws.amazon.com/cloudwatch/home?region={self.region}"
                f"#dashboards:name={self.monitoring.dashboard.dashboard_name}"
            ),
        )
        for name, secret in self.actions.secrets.items():
            CfnOutput(
                self,
                f"WebhookSecret{pascal(name)}",
                value=secret.secret_arn,
                description=f"signing secret of the {name} webhook endpoint",
            )
