"""Schemathesis against the exported OpenAPI document, through the real handler.

Every operation of `openapi_document()` gets generated requests (valid and
invalid ones), sent as an admin through `local.apigw.wsgi_app`: WSGI -> API
Gateway proxy event with Cognito claims -> the API function -> moto. The
acceptance criterion: no 5xx, and every response (status, content type, body)
is one the document declares.

Path parameters are drawn half of the time from the seeded data (accounts,
invoices, cases, policies...), so the routes also answer with something found,
not only with 404s. The portfolio is seeded once per module (and per xdist
worker); the generated requests change it as they go, as clients would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from moto import mock_aws
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from dunning import aws, clock
from dunning.api.app import openapi_document
from local.apigw import ApiClient, wsgi_app
from local.cloud import LocalCloud
from tests.integration.api_helpers import NOW, account_body, invoice_body, seed_configuration
from tests.integration.conftest import isolate_aws

# Examples per operation (and generation mode); raise it for a deeper run, e.g.
# DUNNING_SCHEMATHESIS_EXAMPLES=100 .venv/bin/pytest tests/integration/test_api_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("DUNNING_SCHEMATHESIS_EXAMPLES", "10"))
BASE_URL = "http://localhost"
HEADERS = {"Authorization": "Bearer local:admin"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Values that exist in the seeded portfolio, per path parameter.
KNOWN: dict[str, list[Any]] = {
    "account_id": ["acc-1", "acc-2"],
    "invoice_id": ["inv-1", "inv-2"],
    "payment_id": ["pay-1"],
    "case_id": ["C-inv-1", "C-inv-2"],
    "suspension_id": ["pr-1"],
    "policy_id": ["consumer", "business"],
    "version": [1],
    "calendar_id": ["default"],
    "list_id": ["vip"],
    "locale": ["en"],
    "name": ["reminder"],
}

schema = schemathesis.openapi.from_dict(openapi_document())


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: Any
) -> st.SearchStrategy[dict[str, Any]]:
    """Half of the time, the path names seeded resources."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    known = {k: KNOWN[k] for k in path_parameters if k in KNOWN}
    if not known:
        return st.just(path_parameters)
    seeded = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in known.items()})
    return st.one_of(st.just(path_parameters), seeded.map(lambda s: {**path_parameters, **s}))


def _seed(stack: LocalCloud) -> None:
    seed_configuration(stack)
    client = ApiClient(stack.functions["api"])

    def call(method: str, path: str, role: str, body: Any = None) -> None:
        response = client.call(method, f"/v1{path}", role=role, json_body=body)
        assert response.status < 300, (method, path, response.status, response.text)

    for n in (1, 2):
        call("PUT", f"/accounts/acc-{n}", "billing", account_body())
        call("PUT", f"/accounts/acc-{n}/invoices/inv-{n}", "billing", invoice_body(f"inv-{n}", 30))
    stack.evaluate(NOW)
    call(
        "POST",
        "/accounts/acc-1/payments",
        "billing",
        {
            "payment_id": "pay-1",
            "currency": "EUR",
            "amount": "10.00",
            "received_at": NOW.isoformat(),
        },
    )
    call(
        "POST",
        "/accounts/acc-1/promises",
        "collector",
        {
            "promise_id": "pr-1",
            "case_id": "C-inv-1",
            "amount": "50.00",
            "promised_date": "2026-11-20",
        },
    )
    call("PUT", "/exclusion-lists/vip", "admin", {"name": "VIP", "account_ids": ["acc-9"]})


@pytest.fixture(scope="module")
def api_app() -> Iterator[Callable[..., Iterable[bytes]]]:
    with pytest.MonkeyPatch.context() as patch:
        isolate_aws(patch)
        aws.reset_clients()
        with mock_aws():
            clock.use(lambda: NOW)
            try:
                stack = LocalCloud(shards=2).create()
                _seed(stack)
                yield wsgi_app(stack.functions["api"])
            finally:
                clock.use(None)
        aws.reset_clients()
    assert "AWS_ENDPOINT_URL" not in os.environ


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_answers_what_its_document_declares(
    case: schemathesis.Case[Any], api_app: Callable[..., Iterable[bytes]]
) -> None:
    case.call_and_validate(base_url=BASE_URL, app=api_app, headers=HEADERS, checks=CHECKS)
