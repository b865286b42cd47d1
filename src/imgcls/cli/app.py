"""The typer apps every command module adds its commands to, and the options several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Train, check, explain and ship image classifiers.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets: check, split, find mislabelled images.")
show_app = typer.Typer(no_args_is_help=True, help="Draw pictures: samples, augmentation, feature maps (PNG files).")
app.add_typer(data_app, name="data")
app.add_typer(show_app, name="show")

RunArg = Annotated[Path, typer.Argument(help="A run folder, e.g. runs/transfer")]
ImagePathsArg = Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns")]
FiguresOut = Annotated[Path | None, typer.Option(help="Folder for the PNG files (default: inside the run folder)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")]
DATA_PANEL = "Data"
DataRootOption = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        "--data",
        help="Local copy of a built-in dataset (MNIST/raw/*-ubyte.gz, cifar-10-batches-py/, "
        "cats_and_dogs_filtered/); nothing is downloaded then",
        rich_help_panel=DATA_PANEL,
    ),
]
# where labels come from when DATA is not a tree of class folders (see imgcls.data.labels)
LabelFromOption = Annotated[
    str,
    typer.Option(
        help="folder: class subfolders | name: file names such as cat.0.jpg or cat_0.jpg", rich_help_panel=DATA_PANEL
    ),
]
LabelPatternOption = Annotated[
    str | None,
    typer.Option(
        help="Regex with one group, the label, searched in file names (implies name)", rich_help_panel=DATA_PANEL
    ),
]
LabelsCsvOption = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="CSV with columns path,label[,split]; paths relative to DATA or the CSV",
        rich_help_panel=DATA_PANEL,
    ),
]
AUG_HELP = "Augmentation KEY=VALUE, Keras names (rotation_range=40)"
AugOption = Annotated[list[str] | None, typer.Option(help=AUG_HELP)]


def label_options(label_from: str, label_pattern: str | None, labels: Path | None):
    """LabelOptions for the label flags, or None for class folders (the default)."""
    from imgcls.data.labels import LabelOptions

    return LabelOptions.from_flags(label_from, label_pattern, labels)
