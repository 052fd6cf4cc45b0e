"""The tables: the domain's single table and Powertools' idempotency table.

Both come from `dunning.store.schema`, the one definition the tests and the
local run create on moto too: keys, the three sparse indexes with their
projections, the TTL attributes. Encrypted with a customer-managed key that
rotates; point-in-time recovery on; deletion protection from context.

Grants are explicit lists of DynamoDB actions (no `dynamodb:*`), and the key
permissions are the three a client of a KMS-encrypted table needs:
`kms:Decrypt` to read, plus `kms:Encrypt` and `kms:GenerateDataKey` to write.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from dunning.store.schema import IDEMPOTENCY_TABLE, TABLE
from infra.config import StageConfig

READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
WRITE = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
)
KEY_READ = ("kms:Decrypt",)
KEY_WRITE = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


def _string(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


class Data(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description=f"dunning {config.stage}: encryption at rest of the tables",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        pitr = dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=_string(TABLE.partition_key),
            sort_key=_string(TABLE.sort_key),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=pitr,
            deletion_protection=config.deletion_protection,
            time_to_live_attribute=TABLE.ttl_attribute,
            removal_policy=removal,
        )
        for index in TABLE.indexes:
            self.table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_string(index.partition_key),
                sort_key=_string(index.sort_key),
                projection_type=dynamodb.ProjectionType.INCLUDE,
                non_key_attributes=list(index.projection),
            )
        self.idempotency_table = dynamodb.Table(
            self,
            "IdempotencyTable",
            partition_key=_string(IDEMPOTENCY_TABLE.key),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=pitr,
            deletion_protection=config.deletion_protection,
            time_to_live_attribute=IDEMPOTENCY_TABLE.ttl_attribute,
            removal_policy=removal,
        )

    @property
    def index_arns(self) -> list[str]:
        """The ARNs of the table's own indexes, one by one (no `index/*`)."""
        return [f"{self.table.table_arn}/index/{index.name}" for index in TABLE.indexes]

    def grant_table(
        self,
        grantee: iam.IGrantable,
        actions: Sequence[str],
        *,
        index_actions: Sequence[str] = (),
        write: bool = False,
    ) -> None:
        """`actions` on the table, `index_actions` on each of its indexes (named one by one)."""
        principal = grantee.grant_principal
        if actions:
            principal.add_to_principal_policy(
                iam.PolicyStatement(actions=sorted(set(actions)), resources=[self.table.table_arn])
            )
        if index_actions:
            principal.add_to_principal_policy(
                iam.PolicyStatement(actions=sorted(set(index_actions)), resources=self.index_arns)
            )
        self.grant_key(grantee, write=write)

    def grant_idempotency(self, grantee: iam.IGrantable) -> None:
        """What Powertools' DynamoDB persistence layer calls on its table."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                resources=[self.idempotency_table.table_arn],
            )
        )
        self.grant_key(grantee, write=True)

    def grant_key(self, grantee: iam.IGrantable, *, write: bool) -> None:
        self.key.grant(grantee, *(KEY_WRITE if write else KEY_READ))
