"""Write docs/recipes.md from the recipe registry (`imgcls.recipes.list_recipes()`).

    .venv/bin/python docs/make_recipes.py           # rewrite docs/recipes.md
    .venv/bin/python docs/make_recipes.py --check   # exit 1 when docs/recipes.md is stale

Each recipe gets its description, its expected result and every field, grouped (model, data,
optimiser and schedule, augmentation, transfer), with the unit or meaning that the comment beside
the field in `recipes.py` gives (`augment.AUGMENT_HELP` for augmentation options). A field that no
group names lands in "other", so a new recipe field never breaks this script.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().with_name("recipes.md")

GROUPS: dict[str, tuple[str, ...]] = {
    "Model": ("model", "model_args", "head", "aux_loss_weight", "flip_tta", "eval_crops"),
    "Data": ("image_size", "channels", "resize", "mean", "std", "val_split"),
    "Optimiser and schedule": (
        "batch_size",
        "epochs",
        "optimizer",
        "lr",
        "weight_decay",
        "momentum",
        "schedule",
        "warmup_fraction",
        "label_smoothing",
        "early_stopping",
        "monitor",
    ),
    "Transfer": (
        "weights",
        "views",
        "fine_tune",
        "unfreeze",
        "fine_tune_epochs",
        "fine_tune_batch_size",
        "fine_tune_optimizer",
        "fine_tune_lr",
        "fine_tune_schedule",
        "fine_tune_image_size",
    ),
}
NOT_FIELDS = ("name", "description", "expected", "command", "augment")  # shown as text, or in their own section


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = value  # comment` in the class body of `cls` -> {name: comment}."""
    source = inspect.getsource(cls)
    lines = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines[node.end_lineno] = node.target.id
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.start[0] in lines:
            comments[lines[token.start[0]]] = token.string.lstrip("#").strip()
    return comments


def value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(value_text(v) for v in value) + ")"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def field_table(rows: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| field | value | unit, meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{cell(value)}` | {cell(meaning)} |" for name, value, meaning in rows]
    return lines


def recipe_section(recipe, default: str, comments: dict[str, str], augment_help: dict[str, str]) -> list[str]:
    values = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)}
    title = f"## `{recipe.name}`" + (" (default)" if recipe.name == default else "")
    lines = [title, "", recipe.description + ".", "", f"Expected: {recipe.expected}.", ""]
    if recipe.command:
        lines += [f"Measured with `{recipe.command}`.", ""]
    lines += ["```bash", f"imgcls train PHOTOS --recipe {recipe.name}", "```", ""]
    grouped = {name for names in GROUPS.values() for name in names}
    other = tuple(name for name in values if name not in grouped and name not in NOT_FIELDS)
    for group, names in {**GROUPS, "Other": other}.items():
        if group == "Transfer" and recipe.model != "transfer":
            continue
        present = [name for name in names if name in values]
        if not present:
            continue
        rows = [(name, value_text(values[name]), comments.get(name, "")) for name in present]
        lines += [f"### {group}", "", *field_table(rows), ""]
        if group == "Optimiser and schedule":
            lines += augment_lines(recipe.augment, augment_help)
    return lines


def augment_lines(augment, augment_help: dict[str, str]) -> list[str]:
    defaults = type(augment)()
    changed = [f.name for f in dataclasses.fields(augment) if getattr(augment, f.name) != getattr(defaults, f.name)]
    lines = ["### Augmentation", ""]
    if not changed:
        return [*lines, "None (`augment` is empty).", ""]
    rows = [(name, value_text(getattr(augment, name)), _no_example(augment_help.get(name, ""))) for name in changed]
    return [*lines, *field_table(rows), ""]


def _no_example(text: str) -> str:
    """AUGMENT_HELP's meaning without its trailing ", e.g. VALUE." (the table shows the value)."""
    return re.sub(r"[,;]? e\.g\. .*$", ".", text).replace("..", ".")


def render() -> str:
    """The whole of docs/recipes.md, from the registry as it is now."""
    from imgcls.augment import AUGMENT_HELP
    from imgcls.recipes import DEFAULT_RECIPE, Recipe, list_recipes

    recipes = list_recipes()
    comments = field_comments(Recipe)
    lines = [
        "# Recipes",
        "",
        "<!-- Generated by docs/make_recipes.py from imgcls.recipes: do not edit by hand. -->",
        "",
        "A recipe is every hyper-parameter of a training, under one name: `imgcls train PHOTOS --recipe NAME`",
        "(`imgcls recipes` lists them; without `--recipe`, training uses the default). Options of",
        "`imgcls train` such as `--epochs` or `--aug rotation_range=40` override single fields: see",
        "[training.md](training.md#recipes-and-overrides).",
        "",
        'The measured results quoted in *Expected* ("README") are logged, with their commands, in',
        "[benchmarks/README.md](../benchmarks/README.md).",
        "",
        "| recipe | model | input | epochs | expected |",
        "|---|---|---|---|---|",
    ]
    for r in recipes:
        default = r.name == DEFAULT_RECIPE
        name = f"[`{r.name}`](#{r.name}{'-default' if default else ''})" + (" (default)" if default else "")
        size = f"{r.image_size} px, {r.channels} channel{'s' if r.channels > 1 else ''}"
        lines.append(f"| {name} | `{r.model}` | {size} | {r.epochs} | {cell(r.expected)} |")
    lines.append("")
    for recipe in recipes:
        lines += recipe_section(recipe, DEFAULT_RECIPE, comments, AUGMENT_HELP)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/recipes.md from the recipe registry.")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/recipes.md is stale; write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else None
        if current != text:
            print(f"{TARGET} is stale: run .venv/bin/python docs/make_recipes.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
