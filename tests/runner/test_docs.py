"""README.md and docs/: every relative link reaches a file (and its heading, for an anchor), the
README's first screen gives the set-up commands, the five common tasks and the test command as
.ci/run and tasks.py have them, and no page speaks of the project's issue numbers. Host test: the
Markdown is parsed by markdown-it-py (rich's own parser, so on every host that has rich)."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIRST_SCREEN = 60  # lines of README.md a new user reads before scrolling
TASKS = ("run", "bench", "report", "compare", "score")


def _tokens(path: Path):
    """The page's tokens, inline children included, in document order."""
    for token in MarkdownIt("commonmark").enable("table").parse(path.read_text()):
        yield token
        yield from token.children or ()


def anchors(path: Path) -> set[str]:
    """The page's heading anchors as GitHub makes them: the heading's text (code spans as their
    content) lower-cased, characters other than letters, digits, '_', '-' and spaces dropped,
    spaces made '-'; a repeated anchor gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    tokens = list(MarkdownIt("commonmark").enable("table").parse(path.read_text()))
    for heading, inline in zip(tokens, tokens[1:]):
        if heading.type != "heading_open":
            continue
        text = "".join(c.content for c in inline.children if c.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(path: Path) -> list[str]:
    return [t.attrs["href"] for t in _tokens(path) if t.type == "link_open"
            and not re.match(r"^[a-z][a-z0-9+.-]*:", str(t.attrs["href"]))]  # not https:, mailto:, ...


def test_the_pages_exist_and_link_each_other():
    assert len(PAGES) > 5, PAGES
    linked = {(ROOT / href.split("#")[0]).resolve() for href in relative_links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md links no page of docs/ named {unlinked}"


def broken_links(page: Path) -> list[str]:
    broken = []
    for href in relative_links(page):
        target, _, anchor = href.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not file.exists():
            broken.append(f"{href}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{href}: no heading #{anchor} in {file.name} (has {sorted(anchors(file))})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "B.md").write_text("# The `zoo run` page, measured (`x.py`)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "A.md"
    page.write_text("[ok](B.md#the-zoo-run-page-measured-xpy) [ok](B.md#twice-1) [self](#top)\n\n# Top\n\n"
                    "| a | [gone](C.md) |\n| --- | --- |\n| [bad](B.md#twice-2) | [web](https://example.org/x) |\n\n"
                    "    [not a link](C.md)\n")
    assert broken_links(page) == [f"C.md: no file {tmp_path / 'C.md'}",
                                  "B.md#twice-2: no heading #twice-2 in B.md (has ['the-zoo-run-page-measured-xpy', "
                                  "'twice', 'twice-1'])"]


def test_the_anchor_rule_is_githubs():
    page = ROOT / "docs" / "MEASUREMENTS_HISTORY.md"
    assert "reduced-precision-measured-benchmarksprecision_targetspy" in anchors(page)
    assert "unet-pytorch-eager-and-onnx-runtime" in anchors(page)


def test_no_page_speaks_of_issue_numbers():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in PAGES
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bissues?\s*#?\d+", line, re.IGNORECASE)]
    assert not found, "\n".join(found)


def _first_screen_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()[:FIRST_SCREEN]
    return [line.split("#")[0].strip() for line in lines if line.startswith("    python3 ")]


def _ci_commands() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.startswith("python3 ")]


def test_the_first_screen_has_the_set_up_and_test_commands_of_ci():
    commands = _first_screen_commands()
    ci = _ci_commands()
    ci_pip = [c for c in ci if c.startswith("python3 -m pip install ")]
    assert ci_pip and shlex.split(ci_pip[0])[-2:] == ["-r", "requirements.txt"], ci_pip
    assert "python3 -m pip install -r requirements.txt" in commands, commands
    assert "python3 -m invoke setup" in commands, commands
    test = [c for c in ci if c.startswith("python3 -m invoke test")]
    assert test == ["python3 -m invoke test"], f".ci/run's test command changed: {test}"
    assert test[0] in commands, f"README.md's first {FIRST_SCREEN} lines lack .ci/run's test command {test[0]!r}"


def test_the_first_screen_runs_the_five_tasks_with_options_they_have():
    commands = _first_screen_commands()
    listing = subprocess.run([sys.executable, "-m", "invoke", "--list", "--list-format", "json"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    known = {t["name"] for t in json.loads(listing.stdout)["tasks"]}
    shown = {shlex.split(c)[3] for c in commands if c.startswith("python3 -m invoke ")}
    assert set(TASKS) <= shown, f"README.md's first {FIRST_SCREEN} lines show no example of {set(TASKS) - shown}"
    assert shown <= known, f"README.md names tasks invoke does not have: {shown - known}"
    for command in commands:
        words = shlex.split(command)
        if words[:3] != ["python3", "-m", "invoke"]:
            continue
        task_help = subprocess.run([sys.executable, "-m", "invoke", "--help", words[3]], cwd=ROOT,
                                   capture_output=True, text=True, timeout=120).stdout
        unknown = [w for w in words[4:] if w.startswith("--") and not re.search(re.escape(w) + r"[\s=\[]", task_help)]
        assert not unknown, f"README.md: `{command}`: invoke {words[3]} has no {unknown}"
