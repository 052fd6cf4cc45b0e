"""Analysis: what-if simulation (role `admin`) and reports (role `viewer`)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

router = Router()  # type: ignore[no-untyped-call]
