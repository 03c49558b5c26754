"""The operator console: a static page (srm/console/) that calls the operator endpoints.

The page, its stylesheet and its script are read once per application. The only thing the
server writes into the page is whether operator keys are configured, so that a console with
no key to accept says so instead of offering a sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aiohttp import web

PATH = "/srm/console"  # and the same under every other API prefix (/srm/v1/console)
STYLESHEET = f"{PATH}/console.css"
SCRIPT = f"{PATH}/console.js"
# the page names its files relative to its own address, so that each prefix's page loads
# that prefix's files
FILES = ("console.css", "console.js")
# no inline script or style anywhere, no eval; the page talks only to its own origin
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
OPERATOR_MARK = "{{operator-keys}}"


@dataclass(frozen=True)
class ConsoleFiles:
    """The console's three files, the page already marked for this server."""

    page: bytes
    stylesheet: bytes
    script: bytes


def load(operator_keys_configured: bool) -> ConsoleFiles:
    folder = resources.files("srm").joinpath("console")
    page = folder.joinpath("index.html").read_text(encoding="utf-8")
    marked = page.replace(OPERATOR_MARK, "configured" if operator_keys_configured else "none")
    return ConsoleFiles(
        page=marked.encode(),
        stylesheet=folder.joinpath("console.css").read_bytes(),
        script=folder.joinpath("console.js").read_bytes(),
    )


CONSOLE = web.AppKey("console", ConsoleFiles)


def _answer(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers.update(HEADERS)
    return response


async def page(request: web.Request) -> web.Response:
    return _answer(request.app[CONSOLE].page, "text/html")


async def stylesheet(request: web.Request) -> web.Response:
    return _answer(request.app[CONSOLE].stylesheet, "text/css")


async def script(request: web.Request) -> web.Response:
    return _answer(request.app[CONSOLE].script, "text/javascript")


def paths(prefix: str) -> tuple[str, str, str]:
    """The page, stylesheet and script under API *prefix* (``/srm`` or ``/srm/v1``)."""
    page_path = f"{prefix}/console"
    return page_path, f"{page_path}/{FILES[0]}", f"{page_path}/{FILES[1]}"


def routes(prefixes: tuple[str, ...]) -> list[web.RouteDef]:
    found = []
    for prefix in prefixes:
        page_path, stylesheet_path, script_path = paths(prefix)
        found += [
            web.get(page_path, page, allow_head=False),
            web.get(stylesheet_path, stylesheet, allow_head=False),
            web.get(script_path, script, allow_head=False),
        ]
    return found
