"""functions/api: the REST API, its Cognito user pool and its optional WAF.

Who may call: people in the user pool (groups admin, collector, billing,
viewer; MFA required; no self sign-up) with their access tokens, and the
billing system as a machine client (client credentials, scope
`dunning/billing`). API Gateway checks that a token is a valid access token
of this pool carrying at least one accepted scope; the function then
enforces the role of each route (from `cognito:groups` for people, from the
`dunning/*` scopes for machine clients).

The human client cannot request the `dunning/*` scopes (it has no OAuth
flows), so a person's role only ever comes from their groups.

Request validation is split in two. API Gateway's request validator checks
the request parameters of the one method, `ANY /v1/{proxy+}`, and the only
one declared is the required `Authorization` header; with the Cognito
authorizer, a request without a valid token never reaches the function. The
body is not validated there: a proxy method carries no request model (one model
cannot describe every route behind `{proxy+}`), so `validate_request_body`
has nothing to check. The function validates every body and path, query and
header parameter against its route's pydantic model (Powertools
`APIGatewayRestResolver(enable_validation=True)`, the same models that
generate `docs/openapi.json`), after the route's role check and the body's
size and media-type checks: 401/403, then 413/415, then 422 with the field
named. One set of models, maintained with the code, decides what a valid
request is.
"""

from __future__ import annotations

import json

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from dunning.topology import function
from infra.config import LOG_RETENTION, StageConfig
from infra.constructs.data import READ, WRITE, Data
from infra.constructs.function_factory import FunctionFactory
from infra.nag import acknowledge

ROLES = {
    "admin": "policies, calendars, exclusion lists, templates",
    "collector": "promises to pay, suspensions, approvals",
    "billing": "accounts, invoices, payments",
    "viewer": "read only",
}
RESOURCE_SERVER = "dunning"
# A person's access token carries this scope; a machine token its dunning/* scopes.
HUMAN_SCOPE = "aws.cognito.signin.user.admin"
API_SCOPES = (HUMAN_SCOPE, *(f"{RESOURCE_SERVER}/{role}" for role in ROLES))
API_VERSION_PATH = "v1"

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "clientId": "$context.authorizer.claims.client_id",
    "subject": "$context.authorizer.claims.sub",
    "error": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data: Data,
        factory: FunctionFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = factory.create(
            self,
            "Handler",
            spec=function("api"),
            settings={
                "TABLE_NAME": data.table.table_name,
                "IDEMPOTENCY_TABLE_NAME": data.idempotency_table.table_name,
                "SHARD_COUNT": str(config.shard_count),
                "WEBHOOK_ALLOWED_HOSTS": config.allowed_webhook_hosts,
            },
            description="the REST API (Lambda proxy integration)",
        )
        data.grant_table(
            self.handler.role, (*READ, *WRITE), index_actions=["dynamodb:Query"], write=True
        )
        data.grant_idempotency(self.handler.role)

        self._user_pool(config)
        self._rest_api(config)
        if config.enable_waf:
            self._waf(config)
        else:
            acknowledge(
                self.api.deployment_stage,
                "AwsSolutions-APIG3",
                "This stage was deployed with the enable_waf context set to false (a development "
                "stage); every method still requires a Cognito access token and the stage is "
                "throttled. Production stages keep the default, enable_waf=true.",
            )

    def _user_pool(self, config: StageConfig) -> None:
        removal = RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=config.deletion_protection,
            removal_policy=removal,
        )
        for role, rights in ROLES.items():
            cognito.UserPoolGroup(
                self,
                f"{role.capitalize()}Group",
                user_pool=self.user_pool,
                group_name=role,
                description=f"dunning {role}: {rights}",
            )
        scopes = {
            role: cognito.ResourceServerScope(scope_name=role, scope_description=rights)
            for role, rights in ROLES.items()
        }
        self.resource_server = self.user_pool.add_resource_server(
            "ResourceServer",
            identifier=RESOURCE_SERVER,
            user_pool_resource_server_name="dunning API",
            scopes=list(scopes.values()),
        )
        # The billing system: a confidential machine client (client credentials).
        self.billing_client = self.user_pool.add_client(
            "BillingClient",
            user_pool_client_name="billing-system",
            generate_secret=True,
            auth_flows=cognito.AuthFlow(),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(client_credentials=True),
                scopes=[
                    cognito.OAuthScope.resource_server(self.resource_server, scopes["billing"])
                ],
            ),
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
        )
        # People (collector and admin tools): SRP sign-in, no secret, no OAuth scopes.
        self.console_client = self.user_pool.add_client(
            "ConsoleClient",
            user_pool_client_name="console",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            disable_o_auth=True,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
        )
        prefix = config.auth_domain_prefix or f"dunning-{config.stage}-{Aws.ACCOUNT_ID}"
        self.domain = self.user_pool.add_domain(
            "Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix)
        )

    def _rest_api(self, config: StageConfig) -> None:
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=LOG_RETENTION[config.log_retention_days],
            removal_policy=(
                RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
            ),
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"dunning-{config.stage}",
            description="dunning: accounts, invoices, payments, cases, policies",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway's account-level logging role (one per account and region);
            # kept on stack deletion, as other APIs of the account may rely on it.
            cloud_watch_role=config.api_cloudwatch_role,
            cloud_watch_role_removal_policy=(
                RemovalPolicy.RETAIN if config.api_cloudwatch_role else None
            ),
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.api_throttle_rate,
                throttling_burst_limit=config.api_throttle_burst,
                tracing_enabled=True,
                metrics_enabled=True,
                # Execution logs carry errors only; bodies never (personal data).
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
            ),
        )
        if config.api_cloudwatch_role:
            acknowledge(
                self.api,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "The account-level role API Gateway assumes to write execution logs; "
                "AmazonAPIGatewayPushToCloudWatchLogs is the AWS-managed policy documented for "
                "exactly this service role and only grants CloudWatch Logs writes "
                "(https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-logging.html).",
            )
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self,
            "Authorizer",
            cognito_user_pools=[self.user_pool],
            identity_source=apigw.IdentitySource.header("Authorization"),
        )
        # Checks the required Authorization header; bodies are validated by the
        # function (no request model on a proxy method: see the module docstring).
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        # /v1/{proxy+} ANY: the function routes. (The method is added explicitly:
        # add_proxy's default method options drop the request validator.)
        proxy = self.api.root.add_resource(API_VERSION_PATH).add_resource("{proxy+}")
        proxy.add_method(
            "ANY",
            apigw.LambdaIntegration(
                self.handler.function,
                proxy=True,
                allow_test_invoke=False,
            ),
            authorization_type=apigw.AuthorizationType.COGNITO,
            authorizer=authorizer,
            authorization_scopes=list(API_SCOPES),
            request_validator=validator,
            request_parameters={"method.request.header.Authorization": True},
        )

    def _waf(self, config: StageConfig) -> None:
        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True,
                metric_name=f"dunning-{config.stage}-{name}",
                sampled_requests_enabled=True,
            )

        def managed(priority: int, name: str) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS", name=name
                    )
                ),
                visibility_config=visibility(name),
            )

        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility("api"),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="RateLimitPerIp",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=config.waf_rate_limit,
                            aggregate_key_type="IP",
                            evaluation_window_sec=300,
                        )
                    ),
                    visibility_config=visibility("rate-limit"),
                ),
                managed(1, "AWSManagedRulesAmazonIpReputationList"),
                managed(2, "AWSManagedRulesKnownBadInputsRuleSet"),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=self.web_acl.attr_arn,
        )
