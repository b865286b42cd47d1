"""`imgcls train` and what one trains: `recipes`, `models`, `summary`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli.app import (
    AUG_HELP,
    DATA_PANEL,
    DataRootOption,
    LabelFromOption,
    LabelPatternOption,
    LabelsCsvOption,
    app,
)
from imgcls.cli.render import console, print_recipes, print_run_result

RECIPE, AUGMENT, TRANSFER, RUN, PROCESSES = "Recipe", "Augmentation", "Transfer learning", "Run", "Processes"


def _opt(help_text: str, panel: str, *names: str):
    return typer.Option(*names, help=help_text, rich_help_panel=panel)


def _lr_option(help_text: str, panel: str):
    """A number, or "find" (checked by `imgcls.recipes.parse_lr`, the same for `imgcls.train`)."""
    return typer.Option(help=help_text, rich_help_panel=panel, metavar="LR|find")


@app.command()
def train(
    data: Annotated[
        str | None,
        typer.Argument(help="Folder of class subfolders, train/val layout, flat labelled folder, or a built-in name"),
    ] = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
    data_dir: DataRootOption = None,
    val_split: Annotated[float | None, _opt("Share held out when DATA has no val/ folder", DATA_PANEL)] = None,
    recipe: Annotated[str | None, _opt("Recipe name (imgcls recipes)", RECIPE)] = None,
    epochs: Annotated[int | None, _opt("Epochs (of stage 1 for transfer recipes)", RECIPE)] = None,
    image_size: Annotated[int | None, _opt("Square input size in pixels", RECIPE)] = None,
    channels: Annotated[int | None, _opt("Input channels: 1 = grayscale, 3 = RGB", RECIPE)] = None,
    resize: Annotated[
        str | None, _opt("squash (whole photo, stretched), crop (short side, centre) or pad (letterbox)", RECIPE)
    ] = None,
    batch_size: Annotated[int | None, _opt("Images per step", RECIPE)] = None,
    lr: Annotated[
        str | None, _lr_option("Peak learning rate, or 'find': Lightning's learning-rate finder picks it", RECIPE)
    ] = None,
    early_stopping: Annotated[int | None, _opt("Patience in epochs on --monitor (0 = off)", RECIPE)] = None,
    monitor: Annotated[str | None, _opt("Epoch kept: val_loss (lowest) or val_accuracy (highest)", RECIPE)] = None,
    class_weights: Annotated[str | None, _opt("'auto': weigh classes by inverse frequency", RECIPE)] = None,
    flip_tta: Annotated[
        bool | None, _opt("Average each image's logits with its mirror's", RECIPE, "--flip-tta/--no-flip-tta")
    ] = None,
    eval_crops: Annotated[
        list[float] | None,
        _opt("Predict on the centre this share of each side, scaled up (repeat: averaged)", RECIPE, "--eval-crop"),
    ] = None,
    augment: Annotated[
        bool | None,
        _opt("Recipe augmentation on/off (on: the seeds' when it has none)", AUGMENT, "--augment/--no-augment"),
    ] = None,
    aug: Annotated[list[str] | None, _opt(AUG_HELP, AUGMENT)] = None,
    backbone: Annotated[
        str | None, _opt("efficientnet_lite0, timm/NAME, torchvision/NAME, keras/NAME", TRANSFER)
    ] = None,
    weights: Annotated[
        str | None, _opt("'imagenet' or a .pth/.pt/.safetensors/.h5/.weights.h5/.keras file", TRANSFER)
    ] = None,
    views: Annotated[
        int | None, _opt("Cached feature views per training image (1 plain + augmented)", TRANSFER)
    ] = None,
    head_fit: Annotated[
        str | None, _opt("Stage 1: lbfgs-cv (L2 logistic regression, strength by cross-validation) or epochs", TRANSFER)
    ] = None,
    fine_tune: Annotated[
        bool | None, _opt("Stage 2: unfreeze part of the backbone", TRANSFER, "--fine-tune/--no-fine-tune")
    ] = None,
    unfreeze_from: Annotated[
        str | None, _opt("'last:N' blocks, a layer name (e.g. mixed6: unfreeze what follows), 'all'", TRANSFER)
    ] = None,
    fine_tune_epochs: Annotated[int | None, _opt("Epochs of stage 2", TRANSFER)] = None,
    fine_tune_lr: Annotated[
        str | None, _lr_option("Learning rate of stage 2, or 'find' (the learning-rate finder)", TRANSFER)
    ] = None,
    fine_tune_lr_decay: Annotated[
        float | None,
        _opt("Discriminative rates: each block nearer the input at this times the next one's (e.g. 0.5)", TRANSFER),
    ] = None,
    fine_tune_image_size: Annotated[
        int | None, _opt("Input size of stage 2 and of the model it keeps (progressive resizing)", TRANSFER)
    ] = None,
    budget: Annotated[
        str | None,
        _opt(
            "Time for a transfer training, e.g. 60s, 5m, or off: picks the backbone, size and resize that "
            "fit, by cross-validation (default 60s for the default recipe on up to 10,000 photos)",
            TRANSFER,
        ),
    ] = None,
    out: Annotated[Path, _opt("Folder that holds run folders", RUN)] = Path("runs"),
    name: Annotated[str | None, _opt("Run name (default: the recipe's); never overwritten", RUN)] = None,
    seed: Annotated[int, _opt("Random seed (split, init, order, augmentation)", RUN)] = 0,
    resume: Annotated[Path | None, _opt("Continue an interrupted run folder (its own settings)", RUN)] = None,
    progress: Annotated[bool, _opt("Show progress bars and stages", RUN)] = True,
    report: Annotated[bool, _opt("Write RUN/report.html at the end", RUN, "--report/--no-report")] = True,
    logger: Annotated[
        list[str] | None, _opt("Experiment tracker: csv, tensorboard, mlflow (repeat for several)", RUN)
    ] = None,
    devices: Annotated[str, _opt("Lightning devices: 1, 2, 'auto', '0,1'", PROCESSES)] = "1",
    strategy: Annotated[str, _opt("Lightning strategy: auto, ddp, ddp_spawn, fsdp", PROCESSES)] = "auto",
    num_nodes: Annotated[int, _opt("Machines for multi-node training", PROCESSES)] = 1,
    accelerator: Annotated[str, _opt("cpu, gpu, mps or auto", PROCESSES)] = "auto",
    engine: Annotated[str, _opt("local, or ray: Ray Train workers (pip install 'imgcls[ray]')", PROCESSES)] = "local",
    workers: Annotated[int, _opt("Ray Train workers, one CPU each (--engine ray)", PROCESSES)] = 1,
    address: Annotated[
        str | None, _opt("Ray cluster to join, e.g. auto or ray://head:10001 (default: start one here)", PROCESSES)
    ] = None,
) -> None:
    """Train a recipe on DATA; writes a run folder with the model, history, curves, metrics and report."""
    settings = {k: v for k, v in locals().items() if k not in ("data", "recipe", "resume")}  # = imgcls.train's
    from imgcls.cli import STARTED

    settings["clock_start"] = STARTED  # --budget: the whole command
    from imgcls.api import train as train_run
    from imgcls.progress import is_rank_zero

    if resume is not None:  # the run's own settings; the other options are not looked at
        run = train_run(resume=resume, progress=progress, report=report, address=address)
    else:
        run = train_run(data, recipe, **settings)
    if is_rank_zero():  # DDP worker processes run this command too: report once
        print_run_result(run)


@app.command()
def recipes() -> None:
    """List the named recipes with their settings and expected results."""
    from imgcls.recipes import DEFAULT_RECIPE, list_recipes

    print_recipes(list_recipes(), DEFAULT_RECIPE)


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="Glob pattern, e.g. 'seed-*'")] = "*") -> None:
    """List the registered model architectures."""
    from rich.table import Table

    from imgcls.models.registry import get_model_entry, list_models

    table = Table("model", "default size", "description")
    for name in list_models(pattern):
        entry = get_model_entry(name)
        table.add_row(name, str(entry.default_size), entry.description)
    console.print(table)


@app.command()
def summary(
    name: Annotated[str, typer.Argument(help="A recipe or model name")],
    classes: Annotated[int, typer.Option(help="Number of classes")] = 2,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels")] = None,
) -> None:
    """A Keras-like table: layer, output shape, parameters."""
    from imgcls.summary import model_summary

    console.print(model_summary(name, classes, image_size), highlight=False, soft_wrap=True)
