"""The docs stay true to the tree: the package map of docs/development.md names every package and
module of ``harvester/`` and nothing that does not exist, README.md stays short enough to read, and
every relative link in README.md and docs/*.md reaches a file (and, with ``#anchor``, a heading).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "harvester"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DEVELOPMENT = DOCS / "development.md"
README_MAX_LINES = 300

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_NAME = re.compile(r"`([^`]+)`")


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    targets: list[str] = []
    for line in prose_lines(path.read_text()):
        # Inline code may show link syntax without being a link; link text may itself be code.
        line = INLINE_CODE.sub("code", line)
        targets.extend(LINK.findall(line))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    for end in range(start, len(lines)):
        match = HEADING.match(lines[end])
        if match and len(match.group(1)) <= level:
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])


def first_table(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cells."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            rows.append([cell.strip() for cell in cells])
        elif rows:
            break
    return rows[2:]


def first_code_name(cell: str) -> str:
    match = CODE_NAME.search(cell)
    assert match, f"no `name` in the cell {cell!r}"
    return match.group(1)


def module_files() -> list[Path]:
    """Every module of harvester/, an empty ``__init__.py`` (a bare package marker) aside."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts and not (path.name == "__init__.py" and is_empty(path))
    ]


def is_empty(path: Path) -> bool:
    return not path.read_text().strip()


def packages() -> dict[str, set[str]]:
    """Each package of harvester/ (``harvester/db/``), with the names of its modules."""
    found: dict[str, set[str]] = {}
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if "__pycache__" in init.parts:
            continue
        directory = init.parent
        name = directory.relative_to(ROOT).as_posix() + "/"
        found[name] = {path.stem for path in module_files() if path.parent == directory}
    return found


def package_map() -> dict[str, set[str]]:
    """The overview table of the package map: its first column, and the modules it lists."""
    text = section(DEVELOPMENT.read_text(), "## The package map")
    rows = first_table(text)
    assert rows, "docs/development.md: the package map has no table"
    mapped: dict[str, set[str]] = {}
    for row in rows:
        mapped[first_code_name(row[0])] = set(CODE_NAME.findall(row[1]))
    return mapped


def module_table() -> list[str]:
    text = section(DEVELOPMENT.read_text(), "### What each module owns")
    rows = first_table(text)
    assert rows, "docs/development.md: no table of what each module owns"
    return [first_code_name(row[0]) for row in rows]


def test_the_package_map_names_every_package_and_no_other() -> None:
    mapped = package_map()
    named_packages = {name for name in mapped if name.endswith("/")}
    assert named_packages == set(packages()), (
        f"missing from the map: {sorted(set(packages()) - named_packages)}; "
        f"in the map but no package: {sorted(named_packages - set(packages()))}"
    )


def test_the_package_map_lists_the_modules_of_each_package() -> None:
    mapped = package_map()
    problems: list[str] = []
    for name, modules in packages().items():
        listed = mapped.get(name, set())
        if name == "harvester/":
            # The top-level modules (errors, logs, ...) have rows of their own.
            modules = {m for m in modules if f"harvester/{m}.py" not in mapped}
        if listed != modules:
            missing, unknown = sorted(modules - listed), sorted(listed - modules)
            problems.append(f"{name}: missing {missing}, no such module {unknown}")
    assert not problems, "\n".join(problems)


def test_the_package_map_names_only_modules_that_exist() -> None:
    top_level = [name for name in package_map() if name.endswith(".py")]
    assert top_level, "the map has no row for a top-level module"
    missing = [name for name in top_level if not (ROOT / name).is_file()]
    assert not missing, f"the package map names modules that do not exist: {missing}"


def test_every_module_says_what_it_owns() -> None:
    named = module_table()
    actual = [path.relative_to(ROOT).as_posix() for path in module_files()]
    assert sorted(set(named)) == sorted(named), "a module appears twice in the module table"
    assert set(named) == set(actual), (
        f"missing from 'What each module owns': {sorted(set(actual) - set(named))}; "
        f"named there but no such file: {sorted(set(named) - set(actual))}"
    )


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_every_doc() -> None:
    linked = {(ROOT / target.split("#", 1)[0]).resolve() for target in relative_links(README)}
    unlinked = [doc.name for doc in sorted(DOCS.glob("*.md")) if doc.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"


@pytest.mark.parametrize("path", documents(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    broken: list[str] = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("A PostgreSQL cluster: failover and replicas", "a-postgresql-cluster-failover-and-replicas"),
        ("`harvester status --watch`", "harvester-status---watch"),
        ("Phones in E.164", "phones-in-e164"),
        ("One job's path through the code", "one-jobs-path-through-the-code"),
        ("Set-up and the make targets", "set-up-and-the-make-targets"),
    ],
)
def test_anchors_are_the_ones_github_makes(heading: str, expected: str) -> None:
    assert slug(heading) == expected
