"""The user documents stay true to the code: docs/recipes.md is generated from the recipe registry,
README.md stays short, and every relative link in README.md, docs/ and benchmarks/README.md points at
an existing file (and, for `page.md#part`, at an existing heading)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:...
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
DOCUMENTS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(DOCS.glob("*.md"))]


def load_make_recipes():
    spec = importlib.util.spec_from_file_location("make_recipes", DOCS / "make_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(markdown: str) -> list[str]:
    """Link targets outside code blocks and code spans that are not URLs (in-page `#part` included)."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return [target for target in LINK.findall(text) if not EXTERNAL.match(target)]


def anchors(markdown: str) -> set[str]:
    """The `#part` names GitHub gives the headings: lower case, punctuation dropped, spaces to '-',
    repeated headings numbered `-1`, `-2`..."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    return found


def test_recipes_md_is_generated_from_the_registry() -> None:
    make_recipes = load_make_recipes()
    current = (DOCS / "recipes.md").read_text(encoding="utf-8")
    assert current == make_recipes.render(), "docs/recipes.md is stale: run .venv/bin/python docs/make_recipes.py"


def test_make_recipes_check_reports_staleness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_recipes = load_make_recipes()
    stale = tmp_path / "recipes.md"
    stale.write_text("# Recipes\n", encoding="utf-8")
    monkeypatch.setattr(make_recipes, "TARGET", stale)
    assert make_recipes.main(["--check"]) == 1
    assert stale.read_text(encoding="utf-8") == "# Recipes\n"  # --check writes nothing
    assert make_recipes.main([]) == 0
    assert make_recipes.main(["--check"]) == 0


def test_every_recipe_has_a_section() -> None:
    from imgcls.recipes import list_recipes

    text = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for recipe in list_recipes():
        assert f"## `{recipe.name}`" in text, recipe.name


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_names_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text  # CI runs it: .ci/run


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(document: Path) -> None:
    broken = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path, _, part = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(target)
        elif part and linked.suffix == ".md" and part not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: {broken}"


def test_link_finder() -> None:
    markdown = (
        "[a](docs/a.md) [b](https://example.com) [c](#anchor) ![d](img.png) [e](f.md#part)\n"
        "`[not](code.md)`\n```\n[nor](block.md)\n```\n"
    )
    assert relative_links(markdown) == ["docs/a.md", "#anchor", "img.png", "f.md#part"]


def test_anchors_follow_github() -> None:
    markdown = (
        "# Resume after Ctrl-C or a kill\n## `transfer` (default)\n### Model\n### Model\n```\n# not a heading\n```\n"
    )
    assert anchors(markdown) == {"resume-after-ctrl-c-or-a-kill", "transfer-default", "model", "model-1"}
