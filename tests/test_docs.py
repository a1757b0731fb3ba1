"""The documentation a newcomer navigates: README.md and docs/*.md.

Links are checked the way GitHub renders them: a relative link must name an existing file, and a
`#anchor` into a Markdown page must be the slug GitHub gives one of that page's headings.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_operator_daemon import README_BODY_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The pages README.md promises; configuration.md is written from the settings table elsewhere.
PAGES = (
    "architecture.md",
    "configuration.md",
    "librenms-setup.md",
    "metrics.md",
    "operations.md",
    "security.md",
    "ssh-polling.md",
    "troubleshooting.md",
    "upgrading.md",
)
FIRST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/alert-handler demo"
)
TEST_COMMAND = "bash .ci/run"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def split_code(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, lines inside fenced code blocks) of a Markdown text."""
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match and (fence is None or match.group(1) == fence):
            fence = match.group(1) if fence is None else None
            continue
        (code if fence else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = _LINK.sub(lambda m: m.group(0)[1 : m.group(0).index("]")], heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in split_code(page.read_text(encoding="utf-8"))[0]:
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the inline links in a page's prose (code blocks and code spans excluded)."""
    prose = "\n".join(split_code(page.read_text(encoding="utf-8"))[0])
    return _LINK.findall(_CODE_SPAN.sub("", prose))


def shown(path: Path) -> str:
    """A path as a problem report names it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken(page: Path, target: str) -> str | None:
    """Why a link target of `page` does not resolve, or None if it does. A promised page that is
    missing is reported once, by `test_every_promised_page_exists`, not at every link to it."""
    if _SCHEME.match(target):
        return None  # http(s), mailto: not checked here
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    if not dest.exists():
        if dest.parent == DOCS and dest.name in PAGES:
            return None
        return f"{shown(dest)} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading with anchor #{anchor} in {shown(dest)}"
    return None


def test_slug_matches_github() -> None:
    """1. Headings become GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    assert slug("Trying it on production: DRY_RUN") == "trying-it-on-production-dry_run"
    assert slug("1. `alert-handler status`") == "1-alert-handler-status"
    assert slug("Connecting LibreNMS, in brief") == "connecting-librenms-in-brief"
    assert slug("Troubleshooting: why is device 42 still down?") == (
        "troubleshooting-why-is-device-42-still-down"
    )


def test_link_checker_finds_what_github_would_break(tmp_path: Path) -> None:
    """1. A link to an existing file or heading (a repeated heading's -1 included) resolves.
    2. A missing file, a missing heading and a missing anchor in the same page are reported.
    3. Links inside code blocks and code spans are not links."""
    other = tmp_path / "other.md"
    other.write_text("# Other\n\n## Setup: step `one`\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[a](other.md) [b](other.md#setup-step-one) [c](other.md#notes-1) [d](#page)\n"
        "[e](gone.md) [f](other.md#nowhere) [g](#nowhere) [h](https://example.com/x)\n"
        "`[i](gone-too.md)`\n```\n[j](gone-three.md)\n```\n"
    )
    found = links(page)
    assert found[:4] == ["other.md", "other.md#setup-step-one", "other.md#notes-1", "#page"]
    assert [t for t in found if broken(page, t)] == ["gone.md", "other.md#nowhere", "#nowhere"]


def test_every_promised_page_exists() -> None:
    """1. Each page of docs/ the README's table promises exists (configuration.md included)."""
    missing = [name for name in PAGES if not (DOCS / name).is_file()]
    assert missing == []


def test_every_relative_link_resolves() -> None:
    """1. Every relative link in README.md and docs/*.md names an existing file.
    2. Every #anchor into a Markdown page names one of its headings."""
    problems = [
        f"{page.relative_to(ROOT)}: ({target}) {why}"
        for page in pages()
        for target in links(page)
        if (why := broken(page, target)) is not None
    ]
    assert problems == []


def test_readme_links_every_page() -> None:
    """1. README.md links to every page under docs/ and every page it promises."""
    linked = {t.partition("#")[0] for t in links(README)}
    names = set(PAGES) | {p.name for p in DOCS.glob("*.md")}
    assert sorted(n for n in names if f"docs/{n}" not in linked) == []


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    """1. README.md is at most 260 lines.
    2. Its first code block opens on line 3 with the demo command, then the test command."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, len(lines)
    assert lines[2] == "```sh"
    assert lines[3].split("#")[0].rstrip() == FIRST_COMMAND
    assert lines[4].split("#")[0].rstrip() == TEST_COMMAND


def test_every_body_template_is_the_tested_one() -> None:
    """1. Each copy of the transport's body template in the docs is, byte for byte, the template
    the end-to-end test posts (tests/test_operator_daemon.py)."""
    copies = [
        (page.name, line.strip())
        for page in pages()
        for line in split_code(page.read_text(encoding="utf-8"))[1]
        if "{{ $device_id }}" in line
    ]
    assert {name for name, _ in copies} >= {"README.md", "librenms-setup.md"}
    assert [c for c in copies if c[1] != README_BODY_TEMPLATE] == []


def test_settings_are_tabulated_only_in_configuration() -> None:
    """1. No page but docs/configuration.md has a table whose rows are settings: the reference
    exists once (prose may name settings)."""
    names = set(
        re.findall(r"^#?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert {"LIBRENMS_URL", "WEBHOOK_TOKEN", "STATE_FILE"} <= names
    rows = [
        f"{page.relative_to(ROOT)}: {line}"
        for page in pages()
        if page.name != "configuration.md"
        for line in split_code(page.read_text(encoding="utf-8"))[0]
        if (cell := re.match(r"^\|\s*`?([A-Z][A-Z0-9_]+)", line)) and cell.group(1) in names
    ]
    assert rows == []


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's layout has a line for every module, so it cannot fall behind."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("```\nalert_handler/") :]
    layout = layout[: layout.index("```", 4)]
    package = ROOT / "alert_handler"
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and path.name not in layout
    ]
    assert missing == [], f"add to docs/architecture.md's layout: {missing}"


def test_metrics_md_lists_every_metric_and_operations_md_each_endpoint_once() -> None:
    """1. Every metric the daemon registers has a row in metrics.md (issue 22: the step
    failures counter was left out), and `GET /` is called the status page there.
    2. operations.md's endpoint table has one row per request, and `GET /` is the status page
    behind the token, not "a small JSON index"."""
    from alert_handler.ops.metrics import Metrics

    families = [m for m in Metrics().registry.collect() if m.name.startswith("alert_handler_")]
    wanted = {f"{m.name}_total" if m.type == "counter" else m.name for m in families}
    text = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(alert_handler_[a-z_]+)` \|", text, re.M))
    assert len(wanted) > 20 and wanted - documented == set()
    assert "`index` (`GET /` and `HEAD /`: the [status page]" in text

    ops = (DOCS / "operations.md").read_text()
    rows = re.findall(r"^\| `((?:GET|POST|PUT|HEAD) [^`]+)` \|", ops, re.M)
    assert len(rows) == len(set(rows)), rows
    assert "JSON index" not in ops
    (index,) = [line for line in ops.splitlines() if line.startswith("| `GET /` |")]
    assert "| yes " in index and "status page" in index
