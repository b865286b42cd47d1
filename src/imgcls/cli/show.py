"""`imgcls show ...`: pictures of data, augmentation and what a network computes (PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli.app import (
    AugOption,
    DataRootOption,
    FiguresOut,
    LabelFromOption,
    LabelPatternOption,
    LabelsCsvOption,
    RunArg,
    label_options,
    show_app,
)
from imgcls.cli.render import print_written

FolderOut = Annotated[Path, typer.Option(help="Folder for the PNG files")]


@show_app.command("samples")
def show_samples(
    data: Annotated[str | None, typer.Argument(help="Folder, built-in name (or none with --labels FILE.csv)")] = None,
    out: FolderOut = Path("figures"),
    count: Annotated[int, typer.Option(min=1, help="Photos in the grid")] = 15,
    split: Annotated[str, typer.Option(help="train, val or test")] = "train",
    seed: Annotated[int, typer.Option(help="Random pick (and val split) seed")] = 0,
    data_dir: DataRootOption = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """A grid of photos from DATA with their class names; prints the PNG path."""
    from imgcls.visual.show import show_samples as draw

    print_written(draw(data, out, count, split, seed, data_dir, label_options(label_from, label_pattern, labels)))


@show_app.command("augment")
def show_augment(
    source: Annotated[str, typer.Argument(help="An image file, or DATA (a seeded random training photo is used)")],
    recipe: Annotated[str | None, typer.Option(help="Use this recipe's augmentation and image size")] = None,
    aug: AugOption = None,
    count: Annotated[int, typer.Option(min=1, help="Augmented copies")] = 9,
    seed: Annotated[int, typer.Option(help="Random seed of the augmentations")] = 0,
    out: FolderOut = Path("figures"),
    data_dir: DataRootOption = None,
) -> None:
    """The same photo augmented COUNT times (recipe or --aug; default the seeds' ImageDataGenerator),
    plus seed 001's tf.image flips, crop, brightness and hue; prints the PNG paths."""
    from imgcls.augment import parse_pairs
    from imgcls.visual.show import show_augment as draw

    print_written(draw(source, out, recipe, parse_pairs(aug), count, seed, data_dir))


@show_app.command("activations")
def show_activations(
    run: RunArg,
    image: Annotated[Path, typer.Argument(help="An image file")],
    layers: Annotated[
        list[str] | None, typer.Option(help="Layer names, patterns ('*conv*') or positions; default all conv/pool")
    ] = None,
    max_maps: Annotated[int, typer.Option(min=1, help="Feature maps drawn per layer (the first ones)")] = 64,
    out: FiguresOut = None,
) -> None:
    """Feature maps of every convolution/pooling layer for IMAGE, one PNG per layer; prints the paths."""
    from imgcls.visual.show import show_activations as draw

    print_written(draw(run, image, out, layers, max_maps))
