"""The README and docs/ stay true to the tree: every relative link resolves, every `make` target
they name exists, and the README stays short enough to read in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAKE = re.compile(r"\bmake ([a-z][a-z-]*)\b")
README_MAX_BYTES = 15_000


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.M))


def _code_and_prose(text: str) -> str:
    # `make` words inside ordinary prose ("make sure") are not commands; only look where a command
    # is written: code spans and code blocks.
    spans = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`[^`\n]+`", text)
    return "\n".join(spans)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # external (https:, mailto:) or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_make_targets_named_exist(page: Path) -> None:
    targets = _makefile_targets()
    named = set(MAKE.findall(_code_and_prose(page.read_text())))
    assert named <= targets, f"{page.name}: names make targets the Makefile lacks: {sorted(named - targets)}"


def test_readme_is_short_and_has_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= README_MAX_BYTES
    assert "make all" in text and "make test" in text
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_checks_have_teeth(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text("see [a](missing.md) and `make nonsense`")
    assert LINK.findall(page.read_text()) == ["missing.md"]
    assert MAKE.findall(_code_and_prose(page.read_text())) == ["nonsense"]
    assert "nonsense" not in _makefile_targets()
