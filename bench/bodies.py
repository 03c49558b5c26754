"""Request body decode+validate: SRM's hand-written parser beside msgspec (`python -m
bench.bodies`, `bench/run --only bodies`); the measurement behind bench/README.md's "Request
bodies: hand-written or msgspec".

Only a setup carries a body on the client path (keep-alive and teardown have none), so the
setup body is the one measured: SRM's own (``{"content": {...}}``) and one with every
extension (quality, replaces, playbackId). Three ways:

- ``hand-written``: ``srm.api.bodies.setup_request``, what the handler calls (orjson.loads,
  then the checks in Python, then a ``SetupRequest``);
- ``msgspec``: a ``msgspec.json.Decoder`` of Structs that check in C what the hand-written
  checks do (types, the configured content types and qualities as Literals, contentID's
  length and pattern, the UUID of replaces, playbackId's length), built from the settings as
  the server would build it; the Struct is the answer, only replaces is lower-cased. A body
  it refuses goes to the hand-written parser for today's message (``detail``). This is the
  most favourable form for msgspec: no conversion into ``SetupRequest``;
- ``orjson.loads``: the JSON decoding alone, the floor of the hand-written way.

Times: ``timeit`` rounds alternating between the ways, median ns per body. Instructions
(repeatable whatever the machine's load): each (way, body) decoded N and 2N times in a Python
process under callgrind, its collector settled as in `srm serve` (srm.process.settle_gc: else
a full collection of every imported module falls inside one count and not the other); the
difference divided by N (the loop's own call, about 0.9k, is left in).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson

from srm.api import bodies
from srm.config import defaults
from srm.errors import MalformedRequest
from srm.process import settle_gc

BODIES = {
    "SRM's body": orjson.dumps({"content": {"contentID": "100001V3D", "contentType": "COD"}}),
    "every extension": orjson.dumps(
        {
            "content": {"contentID": "100001V3D", "contentType": "LIVE"},
            "quality": "HD",
            "replaces": "6F1C0B1E-0D1F-4A55-9A52-6C0AD9C1D6A1",
            "playbackId": "pb-3f2a9c1e-77aa-4b0e-9d55-0c1f5a6e2b11",
        }
    ),
}
WAYS = ("hand-written", "msgspec", "orjson.loads")
UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def msgspec_setup(
    content_types: tuple[str, ...], qualities: tuple[str, ...]
) -> Callable[[bytes], object]:
    """The msgspec candidate of ``bodies.setup_request`` for these settings."""
    decode = setup_decoder(content_types, qualities).decode
    refused = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)

    def parse(body: bytes) -> object:
        try:
            request: Any = decode(body)
        except refused:
            return bodies.setup_request(body, content_types, qualities)  # today's message
        replaces = request.replaces
        if replaces is not None:
            if len(replaces) != 36:  # a pattern's $ also matches before a final newline
                return bodies.setup_request(body, content_types, qualities)
            request.replaces = replaces.lower()
        return request

    return parse


def setup_decoder(
    content_types: tuple[str, ...], qualities: tuple[str, ...]
) -> msgspec.json.Decoder[Any]:
    """A decoder of Structs that check what ``bodies.setup_request`` checks."""
    content = msgspec.defstruct(
        "Content",
        [
            (
                "contentID",
                Annotated[
                    str,
                    msgspec.Meta(
                        max_length=bodies.MAX_CONTENT_ID_LENGTH, pattern=bodies.CONTENT_ID_PATTERN
                    ),
                ],
            ),
            ("contentType", Literal[content_types]),
        ],
    )
    setup = msgspec.defstruct(
        "SetupRequest",
        [
            ("content", content),
            ("quality", Literal[qualities] | None, None),
            ("replaces", Annotated[str, msgspec.Meta(pattern=UUID)] | None, None),
            (
                "playbackId",
                Annotated[str, msgspec.Meta(min_length=1, max_length=bodies.MAX_PLAYBACK_ID_LENGTH)]
                | None,
                None,
            ),
        ],
    )
    return msgspec.json.Decoder(setup)


def parsers() -> dict[str, Callable[[bytes], object]]:
    types, qualities = _settings()
    return {
        "hand-written": lambda body: bodies.setup_request(body, types, qualities),
        "msgspec": msgspec_setup(types, qualities),
        "orjson.loads": orjson.loads,
    }


def check(parse: dict[str, Callable[[bytes], object]]) -> None:
    """Both ways read the measured bodies alike, and refuse a bad one with today's words."""
    for body in BODIES.values():
        hand = bodies.setup_request(body, *_settings())
        got: Any = parse["msgspec"](body)
        read = (got.content.contentID, got.content.contentType, got.quality, got.replaces)
        assert (*read, got.playbackId) == (
            hand.content_id,
            hand.content_type,
            hand.quality,
            hand.replaces,
            hand.playback_id,
        )
    blank = b'{"content": {"contentID": " "}}'
    assert _answer(parse["msgspec"], blank) == "content.contentID is missing, empty or blank"


def _answer(parse: Callable[[bytes], object], body: bytes) -> str:
    """What *parse* makes of *body*: "accepted", or the SRM-0002 detail, or the exception."""
    try:
        parse(body)
    except MalformedRequest as exc:
        return str(exc)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


# Bodies that SRM refuses today (SRM-0002) and a msgspec Decoder of the same Structs does not,
# or refuses with an exception of its own: each needs code beside the Structs, or changes the
# contract ("body not JSON" is SRM-0002).
_COD = b'"content": {"contentID": "a", "contentType": "COD"}'
DIFFERENCES = {
    "unknown key holding invalid UTF-8": b'{%b, "x": "\xff"}' % _COD,
    "unknown key holding 1e999": b'{%b, "x": 1e999}' % _COD,
    "unknown key nested 2000 deep": b'{%b, "x": %b}' % (_COD, b"[" * 2000 + b"]" * 2000),
    "replaces ending in a newline": b'{%b, "replaces": "6f1c0b1e-0d1f-4a55-9a52-6c0ad9c1d6a1\\n"}'
    % _COD,
    "two errors, the later one first": b'{"quality": "4K", "content": {"contentID": " ", '
    b'"contentType": "COD"}}',
}


def differences() -> dict[str, tuple[str, str]]:
    """(SRM today, the msgspec Decoder alone) of each body of DIFFERENCES."""
    types, qualities = _settings()
    decode = setup_decoder(types, qualities).decode
    return {
        name: (
            _answer(lambda b: bodies.setup_request(b, types, qualities), body),
            _answer(decode, body),
        )
        for name, body in DIFFERENCES.items()
    }


def _settings() -> tuple[tuple[str, ...], tuple[str, ...]]:
    s = defaults().sessions  # the shipped content types and qualities
    return s.content_types, s.qualities


def times(rounds: int = 15, number: int = 20_000) -> dict[tuple[str, str], float]:
    """Median ns per body of each (body, way), the ways alternating in every round."""
    parse = parsers()
    check(parse)
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, body in BODIES.items():
            for way in WAYS:
                f = parse[way]
                seconds = timeit.timeit(lambda f=f, body=body: f(body), number=number)  # type: ignore[misc]
                samples.setdefault((name, way), []).append(seconds / number * 1e9)
    return {key: statistics.median(values) for key, values in samples.items()}


def instructions(calls: int = 2000) -> dict[tuple[str, str], float]:
    """Instructions per body of each (body, way) under callgrind: (count at 2N - count at N) / N."""
    out: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="srm-bodies-") as tmp:
        for name in BODIES:
            for way in WAYS:
                low, high = (_counted(Path(tmp), way, name, n) for n in (calls, 2 * calls))
                out[(name, way)] = (high - low) / calls
    return out


def _counted(tmp: Path, way: str, body: str, calls: int) -> int:
    dump = tmp / "cg.out"
    loop = [sys.executable, "-m", "bench.bodies", "--loop", way, body, str(calls)]
    for command in (loop, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", *loop]):
        # the first run, not counted, writes the byte code caches the counted one then reads
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
            cwd=Path(__file__).resolve().parent.parent,
        )
    summary = re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE)
    assert summary is not None, dump
    return int(summary.group(1))


def _loop(way: str, body: str, calls: int) -> None:
    f, data = parsers()[way], BODIES[body]
    settle_gc()  # as `srm serve` does: no full collection of the imported modules inside the loop
    for _ in range(calls):
        f(data)


def report(ns: dict[tuple[str, str], float], ir: dict[tuple[str, str], float] | None) -> str:
    lines = []
    for name in BODIES:
        parts = []
        for way in WAYS:
            part = f"{way} {ns[(name, way)] / 1000:.2f} us"
            if ir is not None:
                part += f" ({ir[(name, way)] / 1000:.1f}k instructions)"
            parts.append(part)
        lines.append(f"{name} ({len(BODIES[name])} bytes): " + ", ".join(parts))
    return "\n".join(lines)


def row(ns: dict[tuple[str, str], float], ir: dict[tuple[str, str], float] | None) -> str:
    """bench/run's row: per body, hand-written vs msgspec (time, and instructions if counted)."""
    parts = []
    for name in BODIES:
        hand, fast = (name, "hand-written"), (name, "msgspec")
        text = f"{name}: {ns[hand] / 1000:.2f} vs {ns[fast] / 1000:.2f} us"
        if ir is not None:
            text += f", {ir[hand] / 1000:.1f}k vs {ir[fast] / 1000:.1f}k instructions"
        parts.append(text)
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--number", type=int, default=20_000, help="bodies per timed round")
    p.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions under callgrind, N and 2N bodies (0: not)",
    )
    p.add_argument("--loop", nargs=3, metavar=("WAY", "BODY", "N"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)  # fmt: skip
    if a.loop:
        _loop(a.loop[0], a.loop[1], int(a.loop[2]))
        return 0
    for name, (today, decoder) in differences().items():
        print(f"{name}: SRM today: {today}; msgspec Decoder alone: {decoder}")
    ir = instructions(a.instructions) if a.instructions else None
    print("request body decode+validate per body, median of alternating rounds:")
    print(report(times(a.rounds, a.number), ir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
