"""The `srm` command: serve, reaper, events, edge, token, config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from srm import __version__, logs
from srm.config import ConfigError, Settings, load, masked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srm", description="Session Resource Manager")
    parser.add_argument("--version", action="version", version=f"srm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API")
    reaper = sub.add_parser("reaper", help="run the reaper sidecar")
    reaper.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this reaper id (reaper.id) has a live heartbeat, else 1",
    )
    events = sub.add_parser("events", help="deliver the session events (stdout or a webhook)")
    events.add_argument(
        "--webhook", metavar="URL", help="POST JSON arrays of events to URL instead of stdout"
    )
    events.add_argument(
        "--group",
        default="srm-events",
        help="consumer group: its consumers share the events (default srm-events)",
    )
    edge = sub.add_parser(
        "edge",
        help="keep the reference edge (deploy/edge/: nginx + njs) current: its keys file, "
        "and the revoked session ids polled from the revocation feed",
    )
    edge.add_argument(
        "--map",
        default="/var/lib/srm-edge/revoked.map",
        help="the revocation map nginx includes (default /var/lib/srm-edge/revoked.map)",
    )
    edge.add_argument(
        "--keys",
        default="/var/lib/srm-edge/keys.conf",
        help="the keys file nginx includes, written mode 0600 "
        "(default /var/lib/srm-edge/keys.conf)",
    )
    reload = edge.add_mutually_exclusive_group()
    reload.add_argument(
        "--reload",
        metavar="COMMAND",
        help='run COMMAND after a file changed (e.g. "nginx -s reload -c /etc/nginx/nginx.conf")',
    )
    reload.add_argument(
        "--nginx-pid",
        metavar="PATH",
        help="send SIGHUP to the nginx master whose pid file is PATH after a file changed",
    )
    edge.add_argument(
        "--once",
        action="store_true",
        help="write the files after one poll, reload if they changed, and exit "
        "(0, or 1 if the feed could not be read)",
    )
    token = sub.add_parser(
        "token",
        help="mint a Client-Token with the (first) configured HS secret, else the "
        "development one of config/dev.toml",
    )
    token.add_argument("--account", required=True, help="the accountId claim")
    token.add_argument("--device", required=True, help="the deviceId claim")
    token.add_argument(
        "--device-type",
        type=_device_type,
        help="the deviceType claim (1..64 characters: tv, phone, ...; limit rules match on it)",
    )
    token.add_argument(
        "--max-sessions",
        type=_max_sessions,
        help="the maxSessions claim (0..1000000; honoured when auth.limit_claims is true)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    sub.add_parser("config", help="print the effective settings (secrets masked)")
    return parser


def _device_type(text: str) -> str:
    from srm.auth import MAX_DEVICE_TYPE_LENGTH

    if not 1 <= len(text) <= MAX_DEVICE_TYPE_LENGTH:
        raise argparse.ArgumentTypeError(
            f"a deviceType has 1 to {MAX_DEVICE_TYPE_LENGTH} characters"
        )
    return text


def _max_sessions(text: str) -> int:
    from srm.auth import MAX_SESSIONS_CLAIM

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SESSIONS_CLAIM:
        raise argparse.ArgumentTypeError(f"an integer 0..{MAX_SESSIONS_CLAIM}, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load()
        logs.setup(settings.logging.level, logs.secrets_of(settings))
        return _run(args, settings)
    except ConfigError as exc:
        print(f"srm: configuration error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        from srm.reaper import sidecar
        from srm.server import serve

        # The embedded default is the one-command setup: it runs the reaper itself.
        return serve(settings, companion=None if settings.redis.url else sidecar.companion)
    if args.command == "reaper":
        if args.check:
            from srm.reaper.health import check

            return check(settings)
        from srm.reaper.sidecar import run

        return run(settings)
    if args.command == "events":
        from srm.events.main import run as run_events

        return run_events(settings, args.webhook, args.group)
    if args.command == "edge":
        from srm.edge import run as run_edge

        return run_edge(settings, args)
    if args.command == "token":
        return _token(args, settings)
    if args.command == "config":
        return _print(orjson.dumps(masked(settings), option=orjson.OPT_INDENT_2).decode())
    print(f"srm: {args.command} is not available in this build", file=sys.stderr)
    return 2


def dev_config() -> Path | None:
    """config/dev.toml, the development overlay scripts/run uses: in the working directory
    (a checkout's root), else beside the package (a checkout installed editable)."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = root / "config" / "dev.toml"
        if candidate.is_file():
            return candidate
    return None


def _token_settings(settings: Settings) -> Settings:
    """The settings to sign with: the configured ones, or, when SRM_CONFIG is unset and they
    have no key at all, the development overlay's (said on stderr; SRM_* variables apply)."""
    from srm.config import HMAC_ALGORITHMS

    a = settings.auth
    if os.environ.get("SRM_CONFIG") or a.hmac_secrets or a.jwks_url:
        return settings
    if a.algorithms[0] not in HMAC_ALGORITHMS:
        return settings
    found = dev_config()
    if found is None:
        return settings
    print(f"srm: token: no SRM_CONFIG or SRM_AUTH_SECRET, signed with {found}", file=sys.stderr)
    return load(extra_file=found)


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from srm.auth import mint
    from srm.config import HMAC_ALGORITHMS

    settings = _token_settings(settings)
    algorithm = settings.auth.algorithms[0]
    secrets = settings.auth.hmac_secrets
    if settings.auth.jwks_url or algorithm not in HMAC_ALGORITHMS:
        print(
            f"srm: token: signs with an HS secret only, and auth.algorithm is {algorithm} "
            "(or auth.jwks_url is set): mint tokens with your issuer",
            file=sys.stderr,
        )
        return 2
    if not secrets:
        print(
            "srm: token: no HS secret: set SRM_AUTH_SECRET, or SRM_CONFIG to a TOML file "
            "with auth.secret (config/dev.toml of a checkout for local runs)",
            file=sys.stderr,
        )
        return 2
    claims: dict[str, Any] = {}
    if args.device_type is not None:
        claims["deviceType"] = args.device_type
    if args.max_sessions is not None:
        claims["maxSessions"] = args.max_sessions
    if settings.auth.issuer:
        claims["iss"] = settings.auth.issuer
    if settings.auth.audience:
        claims["aud"] = settings.auth.audience
    return _print(
        mint(secrets[0], args.account, args.device, ttl=args.ttl, algorithm=algorithm, **claims)
    )


def _print(text: str) -> int:
    """Print *text* on stdout; 0, also when the reader has gone (`srm config | head -1`):
    it read what it wanted, which is no error worth a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # nothing more can be written; point stdout at /dev/null so that the flush at exit
        # does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


if __name__ == "__main__":
    sys.exit(main())
