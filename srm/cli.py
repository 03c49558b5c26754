"""The `srm` command: serve, reaper, events, token, config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

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
    token = sub.add_parser(
        "token", help="mint a Client-Token with the (first) configured HS secret"
    )
    token.add_argument("--account", required=True)
    token.add_argument("--device", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    sub.add_parser("config", help="print the effective settings (secrets masked)")
    return parser


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
    if args.command == "token":
        return _token(args, settings)
    if args.command == "config":
        return _print(orjson.dumps(masked(settings), option=orjson.OPT_INDENT_2).decode())
    print(f"srm: {args.command} is not available in this build", file=sys.stderr)
    return 2


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from srm.auth import mint
    from srm.config import HMAC_ALGORITHMS

    algorithm = settings.auth.algorithms[0]
    secrets = settings.auth.hmac_secrets
    if settings.auth.jwks_url or algorithm not in HMAC_ALGORITHMS or not secrets:
        print(
            "srm: token needs an HS* algorithm, auth.secret (SRM_AUTH_SECRET) or auth.secrets "
            "(SRM_AUTH_SECRETS), and no auth.jwks_url",
            file=sys.stderr,
        )
        return 2
    return _print(mint(secrets[0], args.account, args.device, ttl=args.ttl, algorithm=algorithm))


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
