"""The scripts' Lua, as one Redis Functions library generated from srm/lua/.

Each script of srm/lua/ becomes one function of the library, named after the library, whose
body is the script's text; the shared fragments' definitions that the scripts use are
defined once, at the library's top level. Redis runs that top level once, at FUNCTION LOAD,
so a call no longer rebuilds every helper (a script run by EVALSHA makes a closure of each
function it defines at every call).

The scripts keep their script form (they read KEYS and ARGV, and a fragment may keep state
for one call at its top level), so that the sources stay as they are:

- KEYS and ARGV are locals of the library, set from the function's arguments at each call;
- a fragment's top-level value that some code assigns or changes (events_config's settings,
  a cache of one call) is per-call state: each function sets it back to its initial value
  before its body runs, so nothing of one call is seen by the next. Values nothing changes
  (constants, and tables only ever read) are made once, and so is a memo whose comment
  begins "kept across calls" (the parsed rule sets: an entry found or made gives the same
  answer, so keeping it only spares the work).

The library's name carries a digest of its text (``srm_<digest>``), and so do its functions
(``srm_<digest>_<script>``): two versions of SRM running side by side during a roll-out each
have their own library on the same server, and neither replaces or deletes the other's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

# The shared fragments, in the order a script needs them (each may use the ones before it).
_FRAGMENTS = ("_time", "_events", "_account", "_households", "_legacy", "_rules")
# A value whose comment says it is kept across calls is not per-call state: a memo of a pure
# function of its key (a call's answer is the same whether it finds the entry or not).
_KEPT = re.compile(r"^-- kept across calls\b", re.MULTILINE)
_DEFINITION = re.compile(r"local (?:function )?([\w, ]+?)\s*[(=]")
_FUNCTION = re.compile(r"local function ")
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--.*")
# The functions' flags. A function that may write is refused before it starts on a server
# over its maxmemory, unless it has allow-oom; a script by EVAL was refused only at its first
# write that may grow memory, after which it ran to its end. So: read.lua never writes
# (no-writes; it answers an error when the account's 0.x data must be moved first, which
# migrate.lua does); purge.lua and events_prune.lua, which free memory (their first writes
# delete), and events_read.lua (XREADGROUP, never refused for memory), ran to their end on a
# full server and still may (allow-oom): the reaper frees memory when it is most needed, and
# the events keep flowing.
FLAGS: dict[str, tuple[str, ...]] = {
    "read": ("no-writes",),
    "purge": ("allow-oom",),
    "events_prune": ("allow-oom",),
    "events_read": ("allow-oom",),
}
DIGEST_LENGTH = 12


@dataclass(frozen=True)
class Block:
    """A top-level definition of a fragment: the names it defines, its text (the comment above
    included) and whether it is a function (else a value, per-call state if code changes it)."""

    names: frozenset[str]
    text: str
    function: bool

    def code(self) -> str:
        return _COMMENT.sub("", self.text).strip()


def _definitions(text: str) -> list[Block]:
    """The top-level definitions of a fragment (``local function f``, ``local X = ...``)."""
    blocks: list[tuple[set[str], list[str], bool]] = [(set(), [], False)]
    for line in text.splitlines(keepends=True):
        match = _DEFINITION.match(line)
        if match:
            lines = blocks[-1][1]
            comment: list[str] = []  # the comment (and blank lines) just above belong to this one
            while lines and (lines[-1].startswith("--") or not lines[-1].strip()):
                comment.insert(0, lines.pop())
            names = {n.strip() for n in match.group(1).split(",")}
            blocks.append((names, comment, bool(_FUNCTION.match(line))))
        blocks[-1][1].append(line)
    return [Block(frozenset(names), "".join(lines), fn) for names, lines, fn in blocks if names]


def _uses(text: str) -> set[str]:
    return set(_NAME.findall(_COMMENT.sub("", text)))


def _lua(name: str) -> str:
    return resources.files("srm").joinpath("lua").joinpath(f"{name}.lua").read_text()


@cache
def _blocks() -> tuple[Block, ...]:
    return tuple(block for f in _FRAGMENTS for block in _definitions(_lua(f)))


def _needed(body: str, blocks: Iterable[Block]) -> set[str]:
    """The fragment names *body* uses, directly or through one another."""
    needed = _uses(body)
    while True:
        more = set(needed)
        for block in blocks:
            if block.names & needed:
                more |= _uses(block.text)
        if more == needed:
            return needed
        needed = more


def load_script_source(name: str) -> str:
    """A script's Lua text as EVAL runs it: what it uses of the shared fragments, then its
    body (bench/instructions.py's baseline; the service runs the library)."""
    body = _lua(name)
    needed = _needed(body, _blocks())
    return "".join(b.text for b in _blocks() if b.names & needed) + "\n" + body


# A value is changed where it is assigned (NAME = , NAME[...] = , NAME.f = , NAME, X = ) ...
_ASSIGNED = r"(?<![\w.]){name}(?:\s*(?:\[[^\]\n]*\]|\.\w+))*\s*(?:,\s*[\w.\[\]]+\s*)*=(?!=)"
# ... and a table may be changed wherever it is used otherwise than read in place.
_READ_IN_PLACE = r"(?<![\w.])(?:#{name}\b|(?:i?pairs)\({name}\)|{name}\s*[\[.])"


def _changed(name: str, table: bool, code: str) -> bool:
    """Whether *code* (every fragment and script, comments removed) may change *name*: it is
    assigned anywhere but at its definition, or it is a table used otherwise than read."""
    definitions = len(re.findall(rf"\blocal\s+(?:[\w\s,]*,\s*)?{name}\b", code))
    assigned = len(re.findall(_ASSIGNED.format(name=re.escape(name)), code))
    if assigned > definitions:
        return True
    if not table:
        return False
    uses = len(re.findall(rf"(?<![\w.]){re.escape(name)}\b", code))
    reads = len(re.findall(_READ_IN_PLACE.format(name=re.escape(name)), code))
    return uses - definitions > reads


@dataclass(frozen=True)
class Library:
    """The generated library: its name, its text for FUNCTION LOAD, and the function of each
    script (``function(name)``)."""

    name: str
    source: str
    scripts: tuple[str, ...]
    state: frozenset[str]  # the fragment names reset at every call
    kept: frozenset[str]  # the fragment memos kept across calls

    def function(self, script: str) -> str:
        return f"{self.name}_{script}"


def build_library(
    scripts: Iterable[str],
    transform: Callable[[str], str] | None = None,
    prelude: str = "",
    flags: Mapping[str, tuple[str, ...]] = FLAGS,
) -> Library:
    """The library of *scripts* (names of srm/lua/), each function with its *flags*.
    *transform* rewrites the Lua text of fragments and bodies alike before it is assembled,
    and *prelude* goes before them (tests count the scripts' commands this way)."""
    scripts = tuple(scripts)
    change = transform or (lambda text: text)
    bodies = {name: change(_lua(name)) for name in scripts}
    blocks = [Block(b.names, change(b.text), b.function) for b in _blocks()]
    needed = _needed("\n".join(bodies.values()), blocks)
    used = [b for b in blocks if b.names & needed]
    code = _COMMENT.sub("", "\n".join([*(b.text for b in blocks), *bodies.values()]))
    state = [
        b
        for b in used
        if not b.function
        and not _KEPT.search(b.text)
        and any(
            _changed(n, b.code().split("=", 1)[1].lstrip().startswith("{"), code) for n in b.names
        )
    ]
    parts = [
        "-- Generated by srm/store/scripts.py from srm/lua/: the shared fragments once, then\n"
        "-- one function per script (its body as written, with KEYS and ARGV set per call).\n"
        "local KEYS, ARGV\n",
        prelude,
        *(b.text for b in used),
    ]
    for name, body in bodies.items():
        own = _needed(body, used)
        resets = [b.code().removeprefix("local ") for b in state if b.names & own]
        named = ", ".join(f"'{flag}'" for flag in flags.get(name, ()))
        declared = f", flags = {{{named}}}" if named else ""
        parts.append(
            f"\nredis.register_function{{function_name = '@@_{name}', callback = "
            f"function(keys, args)\nKEYS, ARGV = keys, args\n"
            + "".join(f"{reset}\n" for reset in resets)
            + f"-- {name}.lua\n{body}\nend{declared}}}\n"
        )
    text = "".join(parts)
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:DIGEST_LENGTH]
    library = f"srm_{digest}"
    return Library(
        name=library,
        source=f"#!lua name={library}\n" + text.replace("'@@_", f"'{library}_"),
        scripts=scripts,
        state=frozenset(n for b in state for n in b.names),
        kept=frozenset(n for b in used if not b.function and _KEPT.search(b.text) for n in b.names),
    )
