"""The helpers of scripts/compose-check, on the system's python3 (the standard library and
PyYAML, which podman-compose depends on): no SRM code and no virtual environment.

    check.py merge BASE OVERRIDE OUT   write BASE with OVERRIDE merged into it
    check.py free-ports N              print N free TCP ports of 127.0.0.1
    check.py smoke                     the checks against the running stack (see below)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TIMEOUT = 60.0  # seconds any one expected state may take to appear


def merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key, a null removes the key, anything else replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(base.get(key), value)
    return merged


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def call(
    method: str, url: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(url)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - 127.0.0.1
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def until(what: str, predicate: Any, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            found = predicate()
            if found:
                return found
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def step(text: str) -> None:
    print(f"compose-check: {text}", flush=True)


def metric(port: int, name: str) -> float | None:
    """The value of an unlabelled sample *name* on 127.0.0.1:*port*/metrics."""
    _status, text = call("GET", f"http://127.0.0.1:{port}/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def events(container: str) -> list[dict[str, Any]]:
    """The JSON lines the events service printed so far."""
    out = subprocess.run(
        ["podman", "logs", container], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and "type" in event:
                found.append(event)
    return found


def expect(what: str, condition: bool, detail: Any = "") -> None:
    if not condition:
        raise SystemExit(f"FAIL: {what} {detail}")
    step(f"ok: {what}")


def smoke() -> None:
    """Setup, keep-alive and teardown through the API; a session left to lapse is ended by
    the reaper service; the events service prints the events of both."""
    env = os.environ
    project = env["SRM_CI_PROJECT"]
    api = f"http://127.0.0.1:{env['SRM_CI_API_PORT']}"
    reaper_port = int(env["SRM_CI_REAPER_PORT"])
    events_port = int(env["SRM_CI_EVENTS_PORT"])
    operator = {"Authorization": f"Bearer {env['SRM_OPERATOR_KEYS']}"}
    run = f"ci-{os.getpid()}"

    def token(account: str) -> dict[str, str]:
        argv = ["podman", "exec", f"{project}_api_1", "srm", "token"]
        minted = subprocess.run(
            [*argv, "--account", account, "--device", "tv-1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"Client-Token": minted}

    content = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
    client = token(f"{run}-a")
    status, body = call("POST", f"{api}/srm/sessions", client, content)
    expect("setup answers a session", status == 200 and "successResponse" in body, body)
    sid = json.loads(body)["successResponse"]["sessionId"]
    status, body = call("PUT", f"{api}/srm/sessions/{sid}", client)
    expect("keep-alive answers 200", status == 200, (status, body))
    status, body = call("GET", f"{api}/srm/v1/accounts/{run}-a/sessions", operator)
    expect("the operator sees the session", status == 200 and sid in body, (status, body))
    status, body = call("DELETE", f"{api}/srm/sessions/{sid}", client)
    expect("teardown answers 200", status == 200, (status, body))
    status, body = call("GET", f"{api}/srm/sessions/{sid}", client)
    expect("the session reads ENDED", status == 200 and "TEARDOWN" in body, (status, body))

    expired_before = metric(reaper_port, "srm_reaper_sessions_expired_total") or 0.0
    lapsing = token(f"{run}-b")
    status, body = call("POST", f"{api}/srm/sessions", lapsing, content)
    expect("a second setup answers a session", status == 200, body)
    lapsed = json.loads(body)["successResponse"]["sessionId"]
    step(
        f"waiting for the reaper to end {lapsed} "
        f"(SRM_SESSION_TIMEOUT={env['SRM_SESSION_TIMEOUT']} s)"
    )
    until(
        "the reaper service ends the lapsed session",
        lambda: (metric(reaper_port, "srm_reaper_sessions_expired_total") or 0) > expired_before,
    )
    step("ok: srm_reaper_sessions_expired_total went up on the reaper's metrics port")

    def ended(session: str, reason: str) -> bool:
        return any(
            e["type"] == "session.ended" and e["sessionId"] == session and e["endReason"] == reason
            for e in events(f"{project}_events_1")
        )

    until("the events service prints the teardown", lambda: ended(sid, "TEARDOWN"))
    until("the events service prints the lapse", lambda: ended(lapsed, "TIMEOUT"))
    started = {
        e["sessionId"] for e in events(f"{project}_events_1") if e["type"] == "session.started"
    }
    expect("the events service printed both starts", {sid, lapsed} <= started)
    until(
        "srm_events_delivered_total counts them",
        lambda: (metric(events_port, "srm_events_delivered_total") or 0) >= 4,
    )
    step(f"ok: srm_events_delivered_total = {metric(events_port, 'srm_events_delivered_total')}")
    _status, text = call("GET", f"{api}/metrics")
    expect("the API's /metrics counts the requests", "srm_http_requests_total{" in text)


def main(argv: list[str]) -> None:
    if argv[:1] == ["merge"] and len(argv) == 4:
        import yaml  # PyYAML, a dependency of podman-compose

        with open(argv[1]) as base, open(argv[2]) as override:
            merged = merge(yaml.safe_load(base), yaml.safe_load(override))
        with open(argv[3], "w") as out:
            yaml.safe_dump(merged, out, sort_keys=False)
    elif argv[:1] == ["free-ports"] and len(argv) == 2:
        print(" ".join(str(p) for p in free_ports(int(argv[1]))))
    elif argv == ["smoke"]:
        smoke()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
