"""The local signer (`local.signing`) writes the headers botocore's own signer writes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore import auth
from moto import mock_aws

from local import moto_speedups, signing

SIGNED_AT = datetime(2026, 12, 6, 23, 59, 59)


@pytest.fixture
def both_signers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every request is signed by botocore's `add_auth` on a copy and by ours;
    the headers must be equal. Yields the services signed so far."""
    moto_speedups.install()
    ours = auth.SigV4Auth.add_auth
    assert ours is signing._add_auth
    monkeypatch.setattr(auth, "get_current_datetime", lambda: SIGNED_AT)
    signed: list[str] = []

    def compare(self: auth.SigV4Auth, request: Any) -> None:
        theirs = copy.copy(request)
        theirs.headers = copy.deepcopy(request.headers)
        theirs.context = dict(request.context)
        signing._original["add_auth"](self, theirs)
        ours(self, request)
        assert list(request.headers.items()) == list(theirs.headers.items())
        assert request.context["timestamp"] == theirs.context["timestamp"]
        signed.append(self._service_name)  # type: ignore[attr-defined]

    monkeypatch.setattr(auth.SigV4Auth, "add_auth", compare)
    with mock_aws():
        yield signed


def test_every_request_the_product_sends_is_signed_as_botocore_signs_it(
    both_signers: list[str],
) -> None:
    # Given clients of every service the product calls, one with a session token
    region = "eu-west-1"
    ddb = boto3.client("dynamodb", region_name=region)
    sqs = boto3.client("sqs", region_name=region)
    ses = boto3.client("ses", region_name=region)
    sns = boto3.client("sns", region_name=region)
    secrets = boto3.client(
        "secretsmanager",
        region_name=region,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token="session-token  with  spaces",
    )
    # When they send the kinds of request the product sends (JSON and query
    # protocols, small and large bodies, unicode)
    ddb.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
    )
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "t", "Item": {"PK": {"S": f"a{n}"}, "v": {"S": "é" * 5000}}}}
            for n in range(3)
        ]
    )
    ddb.get_item(TableName="t", Key={"PK": {"S": "a1"}}, ConsistentRead=True)
    ddb.query(
        TableName="t",
        KeyConditionExpression="PK = :p",
        ExpressionAttributeValues={":p": {"S": "a2"}},
    )
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"body {n}"} for n in range(3)]
    )
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    ses.verify_email_identity(EmailAddress="billing@example.com")
    ses.send_email(
        Source="billing@example.com",
        Destination={"ToAddresses": ["customer@example.org"]},
        Message={"Subject": {"Data": "Rappel: facture"}, "Body": {"Text": {"Data": "Grüße & =?"}}},
    )
    sns.publish(PhoneNumber="+4915112345678", Message="Ihre Rechnung ist überfällig")
    secrets.create_secret(Name="s", SecretString="x")
    secrets.get_secret_value(SecretId="s")
    # Then each was signed by both signers with the same headers
    assert set(both_signers) == {"dynamodb", "sqs", "ses", "sns", "secretsmanager"}
    assert len(both_signers) == 12
