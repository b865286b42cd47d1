"""`imgcls tune`: a recipe search within a time budget (imgcls.tune); any `imgcls train` option fixes
that setting for every trial."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from imgcls.cli.app import app
from imgcls.cli.render import print_tune_result

TUNE_HELP = (
    "Search variants of a recipe on PHOTOS within --budget (Optuna). Trial 0 is the recipe as it is; "
    "every trial is an ordinary run folder under OUT/NAME/trials/, and OUT/NAME/trials.jsonl and study.json "
    "record them and the best. Any other `imgcls train` option (--image-size 128, --backbone ..., --labels "
    "...) fixes that setting for every trial: it is not searched."
)


@app.command(
    help=TUNE_HELP,
    options_metavar="[PHOTOS] [OPTIONS] [TRAIN OPTIONS]",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def tune(
    ctx: typer.Context,
    budget: Annotated[str, typer.Option(help="Time for the whole search: 90s, 10m, 1.5h (or seconds)")] = "10m",
    recipe: Annotated[str | None, typer.Option(help="Recipe to start from (imgcls recipes); default transfer")] = None,
    trials: Annotated[int | None, typer.Option(help="At most this many trials (default: as the budget allows)")] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the study folder")] = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Study folder name (default: RECIPE-tune); never overwritten")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the sampler and of every trial (the same split)")] = 0,
    progress: Annotated[bool, typer.Option(help="Show each trial's progress bars and stages")] = True,
) -> None:
    from imgcls.tune import tune as tune_recipe

    data, fixed = train_settings(ctx.args)
    result = tune_recipe(
        data, recipe, budget=budget, trials=trials, out=out, name=name, seed=seed, progress=progress, **fixed
    )
    print_tune_result(result)
    if result.stopped == "interrupted":
        raise typer.Exit(130)


def train_settings(args: list[str]) -> tuple[str | None, dict[str, Any]]:
    """PHOTOS and the `imgcls train` options among `args`, parsed by `imgcls train`'s own parser (the
    same names, types and checks); only the options given, so that the rest stay searchable."""
    command = typer.main.get_command(app).commands["train"]
    with command.make_context("imgcls tune", list(args)) as parsed:
        given = {
            name: value
            for name, value in parsed.params.items()
            if getattr(parsed.get_parameter_source(name), "name", None) == "COMMANDLINE"  # typer may vendor click
        }
    return given.pop("data", None), given
