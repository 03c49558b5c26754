"""The OpenAPI document: valid, complete, and true of a live `srm serve` (schemathesis)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import checks as st_checks

from srm.api import openapi
from srm.api.app import PREFIXES, create_app
from srm.errors import SrmError
from srm.store import SessionStore
from tests.helpers import OPERATOR_KEY, token
from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def test_the_document_is_valid_openapi_3(settings: Any) -> None:
    validate(openapi.document(settings, PREFIXES))


def test_every_route_is_documented_and_nothing_else(settings: Any, store: SessionStore) -> None:
    app = create_app(settings, store)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method.lower() in METHODS
    }
    doc = openapi.document(settings, PREFIXES)
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    assert served == documented
    assert len({op["operationId"] for _, item in doc["paths"].items() for op in item.values()}) == (
        len(documented)
    )


def test_every_error_code_is_documented(settings: Any) -> None:
    codes = {cls.code for cls in _subclasses(SrmError)}
    doc = openapi.document(settings, PREFIXES)
    error = doc["components"]["schemas"]["ErrorResponse"]["properties"]["errorResponse"]
    assert set(error["properties"]["errorCode"]["enum"]) == codes
    assert set(error["properties"]["code"]["enum"]) >= {"400", "401", "403", "404", "405", "413"}


def test_a_configured_deny_status_is_documented(settings: Any) -> None:
    doc = openapi.document(settings.replace("sessions", deny_status=409), PREFIXES)
    answers = doc["paths"]["/srm/v1/sessions"]["post"]["responses"]
    assert "oneOf" not in json.dumps(answers["200"])
    assert answers["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Denied")
    validate(doc)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_served_on_both_prefixes(client: Any, settings: Any, prefix: str) -> None:
    resp = await client.get(f"{prefix}/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == openapi.document(settings, PREFIXES)


def _subclasses(cls: type[SrmError]) -> set[type[SrmError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


# -- schemathesis against a live server ------------------------------------------------------


@pytest.fixture(scope="module")
def live_srm(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SrmProcess]:
    with redis_server.client() as c:
        c.flushall()
    tmp = tmp_path_factory.mktemp("openapi")
    with srm_serve(
        tmp,
        SRM_REDIS_URL=redis_server.url,
        SRM_OPERATOR_KEYS=OPERATOR_KEY,
        SRM_REDIS_SHARDS="16",
        SRM_SESSIONS_LIMIT_POLICY="evict",
    ) as srm:
        yield srm


@pytest.fixture(scope="module")
def live_schema(live_srm: SrmProcess) -> Any:
    """The document as the live server serves it."""
    with urllib.request.urlopen(live_srm.base + "/srm/openapi.json", timeout=10) as answer:  # noqa: S310
        document = json.load(answer)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=live_srm.base)
    return schema


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
]
# a valid client token and the operator key on every call: the fuzzing is of everything else
CREDENTIALS = {"Client-Token": token("acct-fuzz", "dev-fuzz", ttl=3600)}
OPERATOR_CREDENTIALS = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def _operation_ids() -> list[str]:
    from srm.config import load

    doc = openapi.document(load(env={}), PREFIXES)
    return [op["operationId"] for item in doc["paths"].values() for op in item.values()]


@pytest.mark.slow
@pytest.mark.parametrize("operation_id", _operation_ids())
def test_the_live_api_keeps_to_its_document(live_schema: Any, operation_id: str) -> None:
    """Generated requests for every operation: no 5xx, no answer outside the document."""
    operation = live_schema.find_operation_by_id(operation_id)

    @given(case=operation.as_strategy())
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        headers = {**CREDENTIALS, **OPERATOR_CREDENTIALS}
        if case.headers and "X-Request-ID" in case.headers:
            headers["X-Request-ID"] = case.headers["X-Request-ID"]
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    check()
