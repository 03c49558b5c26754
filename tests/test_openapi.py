"""The OpenAPI document: valid, complete, and true of a live `srm serve` (schemathesis)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate
from schemathesis import checks as st_checks

from srm import process
from srm.api import console, openapi
from srm.api.app import PREFIXES, create_app
from srm.keys import Keys
from srm.store import SessionStore
from tests.helpers import OPERATOR_KEY, every_error_class, open_backend, token
from tests.licence_server import BAD_CHALLENGE, LICENCE, TOKEN_KEY, LicenceServer
from tests.licence_server import HEADERS as LICENCE_HEADERS
from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def with_drm(settings: Any, upstream: str = "http://127.0.0.1:9/license") -> Any:
    """*settings* with [drm] configured: the licence proxy's paths are served."""
    return settings.replace(
        "drm", upstream_url=upstream, token_key=TOKEN_KEY, headers=dict(LICENCE_HEADERS)
    )


@pytest.mark.parametrize("drm", [False, True], ids=["without-drm", "with-drm"])
def test_the_document_is_valid_openapi_3(settings: Any, drm: bool) -> None:
    validate(openapi.document(with_drm(settings) if drm else settings, PREFIXES))


@pytest.mark.parametrize("drm", [False, True], ids=["without-drm", "with-drm"])
def test_every_route_is_documented_and_nothing_else(
    settings: Any, store: SessionStore, drm: bool
) -> None:
    settings = with_drm(settings) if drm else settings
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
    licence = {("post", f"{prefix}/license/{{sessionId}}") for prefix in PREFIXES}
    assert licence <= documented if drm else not licence & documented
    assert len({op["operationId"] for _, item in doc["paths"].items() for op in item.values()}) == (
        len(documented)
    )


def test_every_error_code_is_documented(settings: Any) -> None:
    codes = {cls.code for cls in every_error_class()}
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


# -- the bodies the API really sends ---------------------------------------------------------


class DocumentedAnswers:
    """Sends requests to the API and checks each answer against the operation's documented
    response for its status: the schema of a JSON body, no content for an empty one."""

    def __init__(self, http: Any, document: dict[str, Any]) -> None:
        self.http = http
        self.doc = document
        self.seen: set[tuple[str, str]] = set()

    async def __call__(
        self,
        method: str,
        template: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        query: dict[str, str] | None = None,
        **params: str,
    ) -> Any:
        path = template.format(**params)
        resp = await self.http.request(
            method, path, headers=headers or {}, json=body, data=raw, params=query
        )
        item = self.doc["paths"].get(template)
        if item is None or method.lower() not in item:  # no such operation: SRM-0010/SRM-0007
            spec = self._response("ErrorResponse")
        else:
            self.seen.add((method.lower(), template))
            answers = item[method.lower()]["responses"]
            # a status, else its range ("4XX": a licence server's refusal passed back)
            status = next(
                (s for s in (str(resp.status), f"{resp.status // 100}XX") if s in answers), None
            )
            assert status is not None, f"{method} {path}: {resp.status} undocumented"
            spec = self._resolve(answers[status])
        content = await resp.read()
        if "content" not in spec:
            assert content == b"", f"{method} {path}: documented without a body"
            return None
        media = resp.content_type if resp.content_type in spec["content"] else "*/*"
        assert media in spec["content"], f"{method} {path}: {resp.content_type}"
        if media != openapi.JSON:
            return content.decode() if media.startswith("text/") else content
        value = json.loads(content)
        schema = {**spec["content"][openapi.JSON]["schema"], "components": self.doc["components"]}
        validator = OAS30Validator(schema, format_checker=oas30_format_checker)
        problems = [error.message for error in validator.iter_errors(value)]
        assert not problems, f"{method} {path} -> {resp.status} {value}: {problems}"
        return value

    def _resolve(self, answer: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in answer:
            return dict(self.doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]])
        return answer

    def _response(self, schema: str) -> dict[str, Any]:
        return {"content": {openapi.JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


FLAGGED = {"flagged": "true"}


@pytest.mark.parametrize("redis_client", ["fakeredis"], indirect=True)
@pytest.mark.parametrize("deny_status", [200, 409])
async def test_every_answer_the_api_sends_is_the_documented_one(
    settings: Any, store: SessionStore, deny_status: int
) -> None:
    """Real answers of every operation (successes, listings, limits, denials and errors)
    validate against the document's schema for their status."""
    from aiohttp.test_utils import TestClient, TestServer

    settings = (
        settings.replace("sessions", deny_status=deny_status)
        .replace("devices", max=2, swap_cooldown_days=1)
        .replace("limits", setups_per_minute=6)
    )
    document = openapi.document(settings, PREFIXES)
    # the settings' device registry, on the fixture's Redis and clock
    store = SessionStore(store.redis, store.keys, process.policy(settings), clock=store.clock)
    client_ = {"Client-Token": token("acct-doc", "dev-1")}
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    setup = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
    sid = "{sessionId}"
    async with TestClient(TestServer(create_app(settings, store))) as http:
        call = DocumentedAnswers(http, document)
        sids = [
            (await call("POST", "/srm/sessions", headers=client_, body=setup))["successResponse"][
                "sessionId"
            ]
            for _ in range(3)
        ]
        denied = await call("POST", "/srm/sessions", headers=client_, body=setup)
        assert denied["errorResponse"]["errorCode"] == "SRM-0005"
        replacing = {**setup, "quality": "HD", "replaces": sids[2]}
        sids[2] = (await call("POST", "/srm/sessions", headers=client_, body=replacing))[
            "successResponse"
        ]["sessionId"]
        await call("GET", "/srm/sessions", headers=client_)
        # one playback, one slot: a retry names the playbackId and joins; the rate's 429
        rated = {"Client-Token": token("acct-rate", "dev-1")}
        played = {**setup, "playbackId": "pb-1"}
        first = await call("POST", "/srm/sessions", headers=rated, body=played)
        for _ in range(5):
            joined = await call("POST", "/srm/sessions", headers=rated, body=played)
            assert joined == first
        over = await call("POST", "/srm/sessions", headers=rated, body=played)
        assert over["errorResponse"]["errorCode"] == "SRM-0011"
        await call("GET", "/srm/sessions", headers=client_)
        await call("GET", f"/srm/sessions/{sid}", headers=client_, sessionId=sids[0])
        await call("PUT", f"/srm/sessions/{sid}", headers=client_, sessionId=sids[0])
        await call("DELETE", f"/srm/sessions/{sid}", headers=client_, sessionId=sids[0])
        ended = await call("GET", f"/srm/sessions/{sid}", headers=client_, sessionId=sids[0])
        assert ended["state"] == "ENDED"
        listing = await call("GET", "/srm/sessions", headers=client_)
        assert {s["state"] for s in listing["sessions"]} == {"ACTIVE", "ENDED"}
        page = await call("GET", "/srm/sessions", headers=client_, query={"limit": "1"})
        assert page["next"] is not None
        await call("GET", "/srm/sessions", headers=client_, query={"cursor": page["next"]})
        # operator calls
        acct = "/srm/accounts/{accountId}"
        await call("GET", acct + "/sessions", headers=operator, accountId="acct-doc")
        await call(
            "DELETE",
            acct + f"/sessions/{sid}",
            headers=operator,
            accountId="acct-doc",
            sessionId=sids[1],
        )
        await call(
            "DELETE",
            acct + "/devices/{deviceId}/sessions",
            headers=operator,
            accountId="acct-doc",
            deviceId="dev-1",
        )
        await call("DELETE", acct + "/sessions", headers=operator, accountId="acct-doc")
        await call("GET", acct + "/limit", headers=operator, accountId="acct-doc")
        await call(
            "PUT", acct + "/limit", headers=operator, body={"maxSessions": 5}, accountId="acct-doc"
        )
        await call("DELETE", acct + "/limit", headers=operator, accountId="acct-doc")
        usage = await call("GET", acct + "/usage", headers=operator, accountId="acct-doc")
        assert usage["days"][0]["started"] == 4 and usage["days"][0]["denied"] == 1
        await call("GET", acct + "/usage", headers=operator, accountId="a", query={"days": "36"})
        report = await call("GET", "/srm/reports/denials", headers=operator)
        assert report["accounts"] == [{"accountId": "acct-doc", "denied": 1}]
        await call("GET", "/srm/reports/denials", headers=operator, query={"date": "2026-13-01"})
        flagged = await call("GET", "/srm/reports/denials", headers=operator, query=FLAGGED)
        assert flagged["accounts"] == []  # no monitor rule here
        await call("GET", "/srm/reports/denials", headers=operator, query={"flagged": "yes"})
        # households: home networks, the device registry, its denial and its cooldown
        home = acct + "/home"
        await call("PUT", home, headers=operator, body={"networks": ["127.0.0.0/8"]}, accountId="h")
        await call("GET", home, headers=operator, accountId="h")
        await call("PUT", home, headers=operator, body={"networks": ["x"]}, accountId="h")
        await call("DELETE", home, headers=operator, accountId="h")
        for device in ("tv", "phone", "laptop"):
            house = {"Client-Token": token("h", device)}
            answer = await call("POST", "/srm/sessions", headers=house, body=setup)
        assert answer["denial"]["rule"] == "devices"
        await call("GET", "/srm/devices", headers=house)
        await call("GET", acct + "/devices", headers=operator, accountId="h")
        await call("DELETE", "/srm/devices/{deviceId}", headers=house, deviceId="tv")
        too_soon = await call("DELETE", "/srm/devices/{deviceId}", headers=house, deviceId="phone")
        assert too_soon["errorResponse"]["errorCode"] == "SRM-0011"
        await call("DELETE", "/srm/devices/{deviceId}", headers=house, deviceId="tv")  # 404
        one = acct + "/devices/{deviceId}"
        await call("DELETE", one, headers=operator, accountId="h", deviceId="phone")  # 429
        await call(
            "DELETE", one, headers=operator, query={"force": "no"}, accountId="h", deviceId="phone"
        )
        await call(
            "DELETE",
            one,
            headers=operator,
            query={"force": "true"},
            accountId="h",
            deviceId="phone",
        )
        # service paths
        for path in ("/health", "/ready", "/metrics", "/srm/openapi.json", "/srm/v1/openapi.json"):
            await call("GET", path)
        for path in (console.PATH, console.STYLESHEET, console.SCRIPT):
            await call("GET", path)
        # errors
        await call("POST", "/srm/sessions", headers=client_, raw=b"{not json")
        await call("POST", "/srm/sessions", body=setup)
        await call("POST", "/srm/sessions", headers=client_, raw=b"x" * 70_000)
        padding = {f"X-Pad-{i}": "y" * 1000 for i in range(9)}
        await call("POST", "/srm/sessions", headers={**client_, **padding}, body=setup)
        await call("PUT", f"/srm/sessions/{sid}", headers=client_, sessionId="not-a-uuid")
        await call("PUT", f"/srm/sessions/{sid}", headers=client_, sessionId=sids[0])  # ended
        await call("GET", acct + "/limit", headers=client_, accountId="acct-doc")
        await call(
            "PUT", acct + "/limit", headers=operator, body={"maxSessions": -1}, accountId="a"
        )
        await call("GET", "/nowhere")
        await call("PATCH", "/srm/sessions", headers=client_)
    latest = {
        (method, path)
        for path, item in document["paths"].items()
        if not path.startswith("/srm/v1/")
        for method in item
    }
    assert latest - call.seen == set(), "operations without a checked answer"


async def test_every_answer_of_the_licence_proxy_is_the_documented_one(
    settings: Any, request: pytest.FixtureRequest
) -> None:
    """The licence path's answers (the licence server's licence and refusal passed back,
    SRM's own errors, SRM-0012's 502 and 504) against the document, on a real Redis and a
    fake licence server that checks the upfront token."""
    from aiohttp.test_utils import TestClient, TestServer

    async with LicenceServer() as fake, open_backend(request, "standalone") as redis:
        settings = with_drm(settings, fake.url).replace("drm", timeout=0.3)
        document = openapi.document(settings, PREFIXES)
        store = SessionStore(redis, Keys(settings.redis.shards), process.policy(settings))
        client_ = {"Client-Token": token("acct-doc", "dev-1")}
        setup = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
        path = "/srm/license/{sessionId}"
        async with TestClient(TestServer(create_app(settings, store))) as http:
            call = DocumentedAnswers(http, document)
            answer = await call("POST", "/srm/sessions", headers=client_, body=setup)
            sid = answer["successResponse"]["sessionId"]
            assert await call(
                "POST", path, headers=client_, raw=b"\x00challenge", sessionId=sid
            ) == (LICENCE)
            assert fake.seen[-1].get("refused") is None
            await call("POST", path, headers=client_, raw=BAD_CHALLENGE, sessionId=sid)  # 403
            await call("POST", path, raw=b"challenge", sessionId=sid)  # 401
            await call("POST", path, headers=client_, raw=b"", sessionId=sid)  # 400
            await call("POST", path, headers=client_, raw=b"x" * 70_000, sessionId=sid)  # 413
            other = str(uuid.uuid4())
            await call("POST", path, headers=client_, raw=b"challenge", sessionId=other)  # 404
            fake.status = 503
            await call("POST", path, headers=client_, raw=b"challenge", sessionId=sid)  # 502
            fake.status, fake.delay = None, 3.0
            await call("POST", path, headers=client_, raw=b"challenge", sessionId=sid)  # 504
            await call("DELETE", "/srm/sessions/{sessionId}", headers=client_, sessionId=sid)
            ended = await call("POST", path, headers=client_, raw=b"challenge", sessionId=sid)
            assert ended["ended"]["endReason"] == "TEARDOWN"
            await call(
                "POST", "/srm/v1/license/{sessionId}", headers=client_, raw=b"c", sessionId=sid
            )
    assert call.seen >= {("post", path), ("post", "/srm/v1/license/{sessionId}")}


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


@pytest.mark.parametrize("redis_client", ["fakeredis"], indirect=True)
async def test_with_cdn_the_tokens_and_the_feed_are_documented_as_answered(
    settings: Any, store: SessionStore
) -> None:
    """[cdn] adds cdnToken to a setup's answer, a body to a keep-alive's and the revocation
    feed: the document says so, and the live answers validate against it."""
    from aiohttp.test_utils import TestClient, TestServer

    settings = settings.replace("cdn", key="00ff" * 8)
    document = openapi.document(settings, PREFIXES)
    validate(document)
    store = SessionStore(
        store.redis,
        store.keys,
        process.policy(settings),
        clock=store.clock,
        events=process.event_policy(settings),
    )
    app = create_app(settings, store)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method.lower() in METHODS
    }
    assert {("get", f"{p}/revocations") for p in PREFIXES} <= served
    assert {(m, p) for p, item in document["paths"].items() for m in item} == served
    client_ = {"Client-Token": token("acct-cdn", "dev-1")}
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    setup = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
    sid = "{sessionId}"
    async with TestClient(TestServer(app)) as http:
        call = DocumentedAnswers(http, document)
        for prefix in PREFIXES:
            made = await call("POST", f"{prefix}/sessions", headers=client_, body=setup)
            session = made["successResponse"]["sessionId"]
            assert made["successResponse"]["cdnToken"]
            kept = await call("PUT", f"{prefix}/sessions/{sid}", headers=client_, sessionId=session)
            assert kept["cdnToken"]
            await call(
                "DELETE",
                prefix + "/accounts/{accountId}/sessions/" + sid,
                headers=operator,
                accountId="acct-cdn",
                sessionId=session,
            )
            polled = await call("GET", f"{prefix}/revocations", headers=operator)
            assert session in [r["sessionId"] for r in polled["revoked"]]
            await call(
                "GET", f"{prefix}/revocations", headers=operator, query={"cursor": polled["next"]}
            )
            forged = await call(
                "GET", f"{prefix}/revocations", headers=operator, query={"cursor": "a::"}
            )
            assert forged["errorResponse"]["errorCode"] == "SRM-0002"
            refused = await call("GET", f"{prefix}/revocations", headers=client_)
            assert refused["errorResponse"]["errorCode"] in ("SRM-0003", "SRM-0006")
