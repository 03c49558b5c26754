"""The scripts' Lua text: each script of srm/lua/ with the shared definitions it uses."""

from __future__ import annotations

import re
from importlib import resources

# The shared fragments, in the order a script needs them (each may use the ones before it).
_FRAGMENTS = ("_time", "_events", "_account", "_households", "_legacy")
_DEFINITION = re.compile(r"local (?:function )?([\w, ]+?)\s*[(=]")
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--.*")


def _definitions(text: str) -> list[tuple[set[str], str]]:
    """The top-level definitions of a fragment (``local function f``, ``local X = ...``),
    each with the names it defines and its text, the comment above it included."""
    blocks: list[tuple[set[str], list[str]]] = [(set(), [])]
    for line in text.splitlines(keepends=True):
        match = _DEFINITION.match(line)
        if match:
            lines = blocks[-1][1]
            comment: list[str] = []  # the comment (and blank lines) just above belong to this one
            while lines and (lines[-1].startswith("--") or not lines[-1].strip()):
                comment.insert(0, lines.pop())
            names = {n.strip() for n in match.group(1).split(",")}
            blocks.append((names, comment))
        blocks[-1][1].append(line)
    return [(names, "".join(lines)) for names, lines in blocks if names]


def load_script_source(name: str) -> str:
    """A script's Lua text, with what it uses of the shared fragments prepended: only the
    definitions it needs, directly or through one another. Every definition costs Redis
    time at every call (Lua makes a closure of each function each time a script runs)."""
    lua = resources.files("srm").joinpath("lua")
    body = lua.joinpath(f"{name}.lua").read_text()
    blocks = [
        block for f in _FRAGMENTS for block in _definitions(lua.joinpath(f"{f}.lua").read_text())
    ]

    def uses(text: str) -> set[str]:
        return set(_NAME.findall(_COMMENT.sub("", text)))

    needed = uses(body)
    while True:
        more = set(needed)
        for names, text in blocks:
            if names & needed:
                more |= uses(text)
        if more == needed:
            break
        needed = more
    used = [text for names, text in blocks if names & needed]
    return "".join(used) + "\n" + body
