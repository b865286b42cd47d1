"""`imgcls data ...`: check a dataset, split it, find likely mislabelled images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli.app import (
    DataRootOption,
    JsonFlag,
    LabelFromOption,
    LabelPatternOption,
    LabelsCsvOption,
    RunArg,
    data_app,
    label_options,
)
from imgcls.cli.render import console, print_json, print_suspects, print_wrote

DataOrCsv = Annotated[str | None, typer.Argument(help="Folder, built-in name (or none with --labels FILE.csv)")]
QualityOption = Annotated[
    list[str] | None,
    typer.Option(
        "--quality",
        metavar="NAME=VALUE",
        help="Change an image-quality threshold (repeatable): min_entropy, max_flat_share, dark, bright, "
        "min_sharpness, min_side, tiny_share, max_aspect, gray_chroma, outlier_z (docs/data.md)",
    ),
]
OutliersFlag = Annotated[
    bool,
    typer.Option(
        "--outliers",
        help="Also flag images far from their class in EfficientNet-Lite0 features "
        "(about 25 ms per image on a CPU, once: the features are cached)",
    ),
]


@data_app.command("check")
def data_check(
    data: DataOrCsv = None,
    as_json: JsonFlag = False,
    val_split: Annotated[float, typer.Option(help="Share held out when DATA has no val/ folder")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of that split")] = 0,
    data_dir: DataRootOption = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
    quality: QualityOption = None,
    outliers: OutliersFlag = False,
) -> None:
    """Counts, formats, sizes, unreadable files, duplicates, leakage across splits, imbalance, image
    quality (blank, dark, bright, blurry, tiny, odd aspect, grayscale); with file-name or CSV labels,
    also the classes found and the files that got no label."""
    from imgcls.data.check import check_dataset, print_check

    chosen = label_options(label_from, label_pattern, labels)
    thresholds = _quality_thresholds(quality or [])
    features = _backbone_features if outliers else None
    found = check_dataset(
        data, val_split=val_split, seed=seed, data_dir=data_dir, labels=chosen, quality=thresholds, features=features
    )
    if as_json:
        print_json(found)
    else:
        print_check(found, console)
    if not found["ok"]:
        raise typer.Exit(1)


def _quality_thresholds(settings: list[str]):
    from imgcls.data.quality import QualityThresholds

    try:
        return QualityThresholds().with_settings(settings)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--quality") from None


def _backbone_features(paths: list[Path]):
    """Features for the outlier check: the frozen EfficientNet-Lite0 that judges `data suspects`, whose
    preprocessing is the `transfer` recipe's, so features its training cached are reused."""
    from imgcls.suspects import DEFAULT_BACKBONE, judge_extractor, quality_features

    return quality_features(judge_extractor(), paths, f"{DEFAULT_BACKBONE} (ImageNet)", "backbone features")


@data_app.command("split")
def data_split(
    src: Annotated[str, typer.Argument(help="Photos: class folders, a split tree, a flat labelled folder")],
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder for train/, val/, test/")],
    train: Annotated[int | None, typer.Option(help="Train images per class (the rest is left out)")] = None,
    val: Annotated[int | None, typer.Option(help="Validation images per class")] = None,
    test: Annotated[int | None, typer.Option(help="Test images per class")] = None,
    fractions: Annotated[
        str | None, typer.Option(help="Shares of each class: train,val[,test] (default 0.7,0.15,0.15)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle")] = 0,
    link: Annotated[
        bool, typer.Option("--link/--copy", help="Hard links (symlinks across file systems) or copies")
    ] = True,
    near_threshold: Annotated[
        int | None, typer.Option(help="dHash bits (of 256) within which images are near-duplicates (default 24)")
    ] = None,
    as_json: JsonFlag = False,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
    data_dir: DataRootOption = None,
) -> None:
    """Stratified, seeded train/val/test class folders; duplicates and near-duplicates stay in one split."""
    from imgcls.data.split import parse_fractions, print_split, split_dataset

    counts = {name: n for name, n in (("train", train), ("val", val), ("test", test)) if n is not None}
    plan = split_dataset(
        src,
        dest,
        counts=counts or None,
        fractions=parse_fractions(fractions),
        seed=seed,
        link=link,
        labels=label_options(label_from, label_pattern, labels),
        near_threshold=near_threshold,
        data_dir=data_dir,
    )
    if as_json:
        print_json(plan.summary())
    else:
        print_split(plan.summary(), console)


@data_app.command("suspects")
def data_suspects(
    run: RunArg,
    data: Annotated[str | None, typer.Argument(help="Images to audit (default: all images of the run)")] = None,
    folds: Annotated[int, typer.Option(help="Folds: each image is judged by a head fitted on the others")] = 5,
    top: Annotated[int, typer.Option(help="How many to list (0 = all); the PNG shows up to 20")] = 20,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: RUN/suspects.png)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the folds")] = 0,
    as_json: JsonFlag = False,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """Likely mislabelled images: those whose label the model disagrees with most, judged out of fold."""
    from imgcls.run import Run
    from imgcls.suspects import find_suspects
    from imgcls.visual.audit import suspects_figure

    found = find_suspects(run, data, folds=folds, seed=seed, labels=label_options(label_from, label_pattern, labels))
    shown = found.suspects[: top or None]
    png = suspects_figure(found, shown[:20], out or Run.open(run).figure("suspects")) if shown else None
    if as_json:
        print_json({**found.as_dict(top or None), "png": png and str(png)})
        return
    print_suspects(found, shown)
    print_wrote(png)
