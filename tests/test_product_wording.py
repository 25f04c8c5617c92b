"""The product documents what tunewise does: no development-history wording, a short README, working links.

Scans README.md, Makefile, pyproject.toml, docs/, bench/, examples/, configs/, src/ and tests/ (text files:
.md, .py, .toml, .yaml, .yml, Makefile) for phrases that date a figure or a line by the work that produced it
(an issue number, the work session, a run of the work that came before, ...), and checks that README.md stays at most
250 lines and that every relative link in README.md and docs/*.md points at an existing file (and heading,
when it names one).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "Makefile", "pyproject.toml", "docs", "bench", "examples", "configs", "src", "tests"]
SUFFIXES = {".md", ".py", ".toml", ".yaml", ".yml"}
CACHE_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
README_MAX_LINES = 250


def _words(*parts: str) -> str:
    """A pattern assembled from parts, so that this file's own source never matches the patterns it holds."""
    return "".join(parts)


# Each pattern: a phrase that tells the story of how the code was made rather than what the product does.
HISTORY_PATTERNS: dict[str, re.Pattern[str]] = {
    "issue-number": re.compile(_words(r"\b[Ii]ss", r"ue #\d+")),
    "issue-wording": re.compile(_words(r"\b[Tt]he iss", r"ue(?:'s| asks| says| requires)\b")),
    "this-session": re.compile(_words(r"\bthis ses", r"sion\b"), re.IGNORECASE),
    "earlier-run": re.compile(_words(r"\bearlier (?:r", r"un|ses", r"sion)s?\b"), re.IGNORECASE),
    # A file name may follow the phrase: `previous run.json` is a file the product keeps.
    "previous-run": re.compile(
        _words(r"\bprevious (?:r", r"un|ses", r"sion|ver", r"sion)s?\b(?!\.[a-z])"), re.IGNORECASE
    ),
    "previous-measurement": re.compile(_words(r"\bprevious meas", r"urement"), re.IGNORECASE),
    "before-change": re.compile(_words(r"\bbefore this cha", r"nge\b"), re.IGNORECASE),
    "before-fix": re.compile(_words(r"\bbefore the fi", r"x(?:es)?\b"), re.IGNORECASE),
    "what-we-did": re.compile(
        _words(r"\bwe (?:fi", r"xed|cha", r"nged|ad", r"ded|rem", r"oved|swi", r"tched)\b"), re.I
    ),
    "used-to": re.compile(_words(r"\b(?:they|it|we) us", r"ed to\b"), re.IGNORECASE),
    "review-findings": re.compile(_words(r"\breview fin", r"dings\b"), re.IGNORECASE),
    "this-pr": re.compile(_words(r"\bthis (?:P", r"R|com", r"mit|pat", r"ch)\b")),
}


def history_findings(text: str) -> list[tuple[int, str, str]]:
    """(line number, pattern name, line) for every line of `text` with development-history wording."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for name, pattern in HISTORY_PATTERNS.items():
            if pattern.search(line):
                found.append((number, name, line.strip()))
    return found


def _generated(parts: tuple[str, ...]) -> bool:
    """Benchmark results and the examples' prepared data are written by commands, not as product text."""
    if any(part in CACHE_DIRS or part.endswith(".egg-info") for part in parts):
        return True
    return parts[:2] == ("bench", "results") or (len(parts) > 2 and parts[0] == "examples" and parts[2] == "data")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            if _generated(candidate.relative_to(ROOT).parts[:-1]):
                continue
            if candidate.is_file() and (candidate.suffix in SUFFIXES or candidate.name == "Makefile"):
                files.append(candidate)
    return files


def test_no_development_history_wording_in_the_product():
    files = scanned_files()
    assert Path(__file__).resolve() in files  # the scan covers this file too, so its patterns must not match it
    problems = [
        f"{path.relative_to(ROOT)}:{number}: {name}: {line}"
        for path in files
        for number, name, line in history_findings(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not problems, "development-history wording (state what the product does):\n" + "\n".join(problems)


def test_the_wording_check_flags_history_and_passes_product_text():
    # Built from parts, like the patterns: written whole, these lines would make the scan above fail.
    history = [
        _words("Benchmarks: every bar of iss", "ue #6 is met."),
        _words("trl-sft is the iss", "ue's reference."),
        _words("Measured in this ses", "sion on a 2-core CPU."),
        _words("Same figures as the earlier r", "un."),
        _words("The previous ver", "sion took 12 s."),
        _words("1.03x, as in the previous meas", "urement."),
        _words("Slower before this cha", "nge."),
        _words("Before the fi", "xes each of these crashed."),
        _words("Then we fi", "xed the sampler."),
        _words("CSV quotes (they us", "ed to swallow the rows after them)."),
        _words("Rev", "iew findings, each one line."),
    ]
    found = history_findings("\n".join(history))
    assert [number for number, _, _ in found] == list(range(1, len(history) + 1))

    product = [
        "A failed write keeps the previous run.json intact.",
        "Few-shot examples come as earlier chat turns.",
        "The previous checkpoint stays intact.",
        "Label issues are kept in a label_issue column.",
        "The sandbox is used to run generated code.",
        "Benchmark targets: throughput >= 2.0x against trl-sft.",
    ]
    assert history_findings("\n".join(product)) == []


def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> str:
    """The Markdown outside fenced code blocks (code is not rendered as links or headings)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return "\n".join(kept)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors: set[str] = set()
    for line in _prose(markdown).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = match.group(1).lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM").replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:  # repeated headings get -1, -2, ...
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def documentation_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def broken_file_links(pages: list[Path]) -> list[str]:
    """`page: target` for each relative link whose file does not exist."""
    broken = []
    for page in pages:
        for target in relative_links(page):
            file_part = target.split("#", 1)[0]
            if file_part and not (page.parent / file_part).exists():
                broken.append(f"{page.name}: {target}")
    return broken


def broken_heading_links(pages: list[Path]) -> list[str]:
    """`page: target` for each relative link to a Markdown heading that the linked page does not have."""
    broken = []
    for page in pages:
        for target in relative_links(page):
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part) if file_part else page
            known = heading_anchors(linked.read_text(encoding="utf-8")) if linked.is_file() else set()
            if anchor and linked.suffix == ".md" and anchor not in known:
                broken.append(f"{page.name}: {target}")
    return broken


def test_every_relative_link_points_at_an_existing_file():
    broken = broken_file_links(documentation_pages())
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_link_to_a_heading_names_one_that_exists():
    broken = broken_heading_links(documentation_pages())
    assert not broken, "links to headings that do not exist:\n" + "\n".join(broken)


def test_the_link_checks_flag_broken_links_and_pass_good_ones(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## Tasks and metrics\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## What `normalize` changes, and what it counts\n\n"
        "[a](other.md) [b](other.md#tasks-and-metrics) [c](#what-normalize-changes-and-what-it-counts)\n"
        "[d](https://example.org/missing.md) [e](missing.md) [f](other.md#no-such-heading) [g](#nor-here)\n"
        "```\n[in code](not-a-link.md)\n# not a heading\n```\n",
        encoding="utf-8",
    )
    assert heading_anchors(page.read_text(encoding="utf-8")) == {"title", "what-normalize-changes-and-what-it-counts"}
    assert broken_file_links([page]) == ["page.md: missing.md"]
    assert broken_heading_links([page]) == ["page.md: other.md#no-such-heading", "page.md: #nor-here"]
