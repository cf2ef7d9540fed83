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


# --------------------------------------------------------------------------- the pages a contributor follows
# docs/ADDING_A_MODEL.md and docs/RUNTIMES.md name commands, files and modules: each must be today's.
ADDING = ROOT / "docs" / "ADDING_A_MODEL.md"
CONTRIBUTOR_PAGES = [ADDING, ROOT / "docs" / "RUNTIMES.md"]
REPO_PATH = re.compile(r"^(zoo|tests|runner|benchmarks|schema|models|docs)/[\w./-]*$")
ZOO_NAME = re.compile(r"^zoo(\.\w+)+$")


def _code(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The page's inline code spans, and its code blocks as (info string, content)."""
    tokens = list(_tokens(path))
    return ([t.content for t in tokens if t.type == "code_inline"],
            [(t.info.strip(), t.content) for t in tokens if t.type in ("fence", "code_block")])


def _help(argv: list[str]) -> str:
    proc = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)} --help: {proc.stderr[-500:]}"
    return proc.stdout


def _has_flag(help_text: str, flag: str) -> bool:
    return re.search(re.escape(flag.split("=")[0]) + r"[\s=\[,]", help_text) is not None


def _zoo_name_problem(name: str) -> str | None:
    """None when `name` (zoo.module[.attribute]) is a module of the zoo, or an attribute that module
    defines at its top level; else what is wrong."""
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:n])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[n:]
        if not rest:
            return None
        text = module.read_text()
        if re.search(rf"^(class |def |){re.escape(rest[0])}\b", text, re.MULTILINE):
            return None
        return f"{name}: {module.relative_to(ROOT)} defines no {rest[0]}"
    return f"{name}: no such module"


def stale_references(page: Path) -> list[str]:
    """The page's invoke commands with a task or flag invoke does not have, its benchmarks/ scripts
    with a flag they do not take, and its repository paths and zoo.* names that do not exist."""
    inline, blocks = _code(page)
    tasks = {t["name"] for t in json.loads(subprocess.run(
        [sys.executable, "-m", "invoke", "--list", "--list-format", "json"], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=True).stdout)["tasks"]}
    problems = []
    lines = [" ".join(c.split()) for c in inline] + [line.strip() for _, c in blocks for line in c.splitlines()]
    for line in lines:
        if "python3 -m invoke " not in line and "benchmarks/" not in line:
            continue
        words = shlex.split(line.split(" #")[0].replace("<", "").replace(">", ""))
        for i, word in enumerate(words):
            if words[i:i + 3] == ["python3", "-m", "invoke"] and len(words) > i + 3:
                task = words[i + 3]
                if task not in tasks:
                    problems.append(f"`{line}`: invoke has no task {task!r}")
                    continue
                text = _help(["-m", "invoke", "--help", task])
                problems += [f"`{line}`: invoke {task} has no {w}" for w in words[i + 4:]
                             if w.startswith("--") and not _has_flag(text, w)]
            elif word.startswith("benchmarks/") and word.endswith(".py"):
                if not (ROOT / word).is_file():
                    problems.append(f"`{line}`: no file {word}")
                    continue
                text = _help([word])
                problems += [f"`{line}`: {word} has no {w}" for w in words[i + 1:]
                             if w.startswith("--") and not _has_flag(text, w)]
    for code in inline:
        if REPO_PATH.match(code) and not (ROOT / code).exists():
            problems.append(f"`{code}`: no such file or folder")
        elif ZOO_NAME.match(code) and (problem := _zoo_name_problem(code)):
            problems.append(f"`{code}`: {problem}")
    return problems


@pytest.mark.parametrize("page", CONTRIBUTOR_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_contributor_pages_name_todays_commands_files_and_modules(page):
    problems = stale_references(page)
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_a_stale_command_file_or_module_is_found(tmp_path):
    page = tmp_path / "A.md"
    page.write_text("Run `python3 -m invoke lock --modle unetpp` and `python3 -m invoke mdoels`; "
                    "`zoo/weights.py`, `zoo.weights.load_strict`, `zoo.checkpoints.load_strickt`, "
                    "`zoo.checkpoints.load_strict` and `zoo/checkpoints.py` (these two are fine).\n\n"
                    "    .venvs/x/bin/python benchmarks/random_weights.py x out.pth --calib-size 96 96\n")
    assert stale_references(page) == [
        "`python3 -m invoke lock --modle unetpp`: invoke lock has no --modle",
        "`python3 -m invoke mdoels`: invoke has no task 'mdoels'",
        "`.venvs/x/bin/python benchmarks/random_weights.py x out.pth --calib-size 96 96`: "
        "benchmarks/random_weights.py has no --calib-size",
        "`zoo/weights.py`: no such file or folder",
        "`zoo.weights.load_strict`: zoo.weights.load_strict: no such module",
        "`zoo.checkpoints.load_strickt`: zoo.checkpoints.load_strickt: zoo/checkpoints.py defines no load_strickt"]


def _page_manifest() -> tuple[dict, list[tuple[str, str]]]:
    import yaml
    _, blocks = _code(ADDING)
    (manifest,) = [yaml.safe_load(c) for info, c in blocks if info == "yaml" and c.startswith("name:")]
    return manifest, blocks


def test_adding_a_model_manifest_validates_and_its_error_line_is_the_codes():
    """The page's whole manifest passes the closed schema; the unknown-key line it shows is the one
    the code prints for that manifest with benchmark.warmpu."""
    from zoo.schema import SchemaError, validate_manifest
    manifest, blocks = _page_manifest()
    validate_manifest(manifest, "models/mynet/model.yaml")
    with pytest.raises(SchemaError) as exc:
        validate_manifest({**manifest, "benchmark": {**manifest["benchmark"], "warmpu": 3}}, "models/mynet/model.yaml")
    shown = [line.strip() for info, c in blocks if not info for line in c.splitlines()]
    assert str(exc.value) in shown, (str(exc.value), shown)


def test_adding_a_model_random_checkpoint_steps_validate():
    """The random checkpoint's first step validates (checksum_unknown: true in place of a checksum),
    and the same entry with neither is refused: the reason for that step."""
    import yaml

    from zoo.schema import SchemaError, validate_manifest
    manifest, blocks = _page_manifest()
    (first,) = [yaml.safe_load(c) for info, c in blocks if info == "yaml" and "checksum_unknown: true" in c]
    entry = first["weights"]["checkpoints"]["random"]
    assert entry["checksum_unknown"] is True and "sha256" not in entry
    validate_manifest({**manifest, **first}, "models/mynet/model.yaml")
    bare = {k: v for k, v in entry.items() if k != "checksum_unknown"}
    with pytest.raises(SchemaError, match="weights/checkpoints/random"):
        validate_manifest({**manifest, "weights": {"default": "random", "checkpoints": {"random": bare}}},
                          "models/mynet/model.yaml")
