"""The documentation's links: every one resolves inside the repository (a fresh clone has
nothing beside it), anchors name real headings, every test it names exists, and the README
stays short."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 220


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "CHANGELOG.md"]
    found += [ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [path for path in found if path.exists()]


_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target "title"), ![alt](target), [label]: target, <scheme://...>, href="..."
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^>\s]*)>")
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""")


def prose(text: str) -> str:
    """*text* without code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return [
        target
        for pattern in (_INLINE, _REFERENCE, _AUTOLINK, _HTML)
        for target in pattern.findall(body)
    ]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    seen: dict[str, int] = {}
    found = set(_HTML_ANCHOR.findall(text))
    for _level, title in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def problems(doc: Path, text: str | None = None) -> list[str]:
    """What is wrong with the links of *doc* (its *text*, when given, else the file's)."""
    found = []
    for target in links(doc.read_text() if text is None else text):
        if not target:
            found.append("an empty link")
            continue
        if _SCHEME.match(target) or target.startswith("//"):
            found.append(f"{target}: leaves the repository (link to a file in it instead)")
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            found.append(f"{target}: absolute path (use a path relative to {doc.name})")
            continue
        resolved = Path(os.path.normpath(doc.parent / path_part)) if path_part else doc
        if resolved != ROOT and ROOT not in resolved.parents:
            found.append(f"{target}: points outside the repository")
            continue
        if not resolved.exists():
            found.append(f"{target}: no such file in the repository")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            found.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    return found


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    assert problems(doc) == []


_TEST_REFERENCE = re.compile(r"\b(test_\w+\.py)(?:::(test_\w+))?")


def missing_tests(text: str) -> list[str]:
    """The tests named in *text* (``test_x.py`` or ``test_x.py::test_y``) that do not exist."""
    missing = []
    for module, name in _TEST_REFERENCE.findall(text):
        path = ROOT / "tests" / module
        if not path.exists():
            missing.append(module)
        elif name and not re.search(rf"^(async )?def {name}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{module}::{name}")
    return missing


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_the_docs_name_exists(doc: Path) -> None:
    assert missing_tests(doc.read_text()) == []


def test_the_test_checker_catches_a_missing_test() -> None:
    text = "`test_docs.py::test_slugs_follow_github`, `test_docs.py::test_gone`, `test_gone.py`"
    assert missing_tests(text) == ["test_docs.py::test_gone", "test_gone.py"]


def test_the_docs_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in documents()}
    assert {"README.md", "SECURITY.md", "docs/api.md", "bench/README.md"} <= names


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_checker_catches_bad_links() -> None:
    page = ROOT / "docs" / "page.md"  # a page as if it were in docs/
    cases = {
        "[a](../../outside.md)": "outside the repository",
        "[a](../shared/API.md)": "no such file",
        "[a](https://example.com/)": "leaves the repository",
        "<https://example.com/>": "leaves the repository",
        "[a](/README.md)": "absolute path",
        "[a](api.md#no-such-heading)": "no heading",
        '<a href="http://example.com">a</a>': "leaves the repository",
    }
    for markdown, complaint in cases.items():
        found = problems(page, markdown)
        assert len(found) == 1 and complaint in found[0], (markdown, found)
    fine = "[ok](api.md#errors) [up](../SECURITY.md) `[code](../../x)`\n```\n[x](../../y)\n```\n"
    assert problems(page, fine) == []


def test_slugs_follow_github() -> None:
    assert slug("Nothing acknowledged lost: `redis.replica_acks`") == (
        "nothing-acknowledged-lost-redisreplica_acks"
    )
    assert slug("List the account's sessions") == "list-the-accounts-sessions"
    assert slug("Running `srm serve`") == "running-srm-serve"


# Settings described on another page, which configuration.md links from their section.
_SETTINGS_ELSEWHERE = {"auth": ROOT / "docs" / "identity.md"}


def undocumented_settings() -> list[str]:
    """The settings of srm/defaults.toml without a row (``| `name` |``) in their section's
    table of docs/configuration.md (or, for some, of the page that section links)."""
    import tomllib

    defaults = tomllib.loads((ROOT / "srm" / "defaults.toml").read_text())
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = []
    for section, values in defaults.items():
        heading = re.search(rf"^### `\[{section}\]`.*$", text, re.MULTILINE)
        if heading is None:
            missing.append(f"[{section}]")
            continue
        end = re.compile(r"^##", re.MULTILINE).search(text, heading.end())
        body = text[heading.end() : end.start() if end else len(text)]
        elsewhere = _SETTINGS_ELSEWHERE.get(section)
        if elsewhere is not None:
            body += elsewhere.read_text()
        missing += [
            f"{section}.{name}"
            for name in values
            if not re.search(rf"^\| `{re.escape(name)}` \|", body, re.MULTILINE)
        ]
    return missing


def test_every_setting_is_described_in_the_configuration_reference() -> None:
    assert undocumented_settings() == []
