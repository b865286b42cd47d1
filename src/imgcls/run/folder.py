"""`Run`: the run folder as one typed object. Training alone writes it; everything else reads it.

A run folder is created once and never overwritten (`runs/NAME`, else `NAME-2`, `-3`...). This is
the only module that names its files (the contract is docs/run-folder.md):

    config.yaml            data, recipe, options, versions; `kept`: stage, epoch and size of the model kept
    split.json             the exact files of every split, with the label options
    classes.json           class names in model order
    model.safetensors      weights, and model.json: everything else about the model (models.classifier)
    history.csv            one row per epoch and stage (run.history)
    metrics.json           held-out metrics of the model kept
    curves.png, confusion_matrix.png, skipped_files.txt
    lr_find-<stage>.png/json the learning-rate finder's curve and points (--lr find; lr_find.* for stage train)
    checkpoints/           best/last/interrupted.ckpt (whole network), head-best.ckpt and
                           fine-tune-{best,last,interrupted}.ckpt (transfer)

and the products of commands that read a run: report.html, model.onnx (+ .json), evaluation and
audit figures (`run.figure(...)`), explain/ and activations/. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from imgcls.data.discover import Dataset, from_manifest
from imgcls.errors import ImgclsError
from imgcls.files import atomic_write_json, atomic_write_text, display_path, fresh_dir
from imgcls.modelfile import SPEC_FILE, WEIGHTS_FILE
from imgcls.progress import is_rank_zero
from imgcls.run.history import read_history
from imgcls.run.html import run_card
from imgcls.run.options import TrainOptions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from imgcls.data.cache import DecodeSettings
    from imgcls.models.classifier import ImageClassifier, ModelSpec
    from imgcls.recipes import Recipe

RUN_DIR_ENV = "IMGCLS_RUN_DIR"  # lets DDP worker processes join the run folder rank 0 created
CONFIG = "config.yaml"
SPLIT = "split.json"
CLASSES = "classes.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
SKIPPED = "skipped_files.txt"
CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"
CHECKPOINTS = "checkpoints"
RAY = "ray"  # Ray Train's own run state (engine ray)
LOGS = "logs"  # experiment trackers' files (--logger)
LR_FIND = "lr_find"  # the learning-rate finder's curve and points (--lr find)
REPORT = "report.html"
ONNX = "model.onnx"
INT8_ONNX = "model.int8.onnx"  # imgcls export --quantize int8
HF = "hf"  # imgcls export --format hf, unless --out says elsewhere
OUTPUT_DIRS = ("explain", "activations")
CHECKPOINT_KINDS = ("best", "last", "interrupted")
RESUMABLE_KINDS = ("last", "interrupted")
PICTURES: dict[str, Callable[..., Figure]] = {}  # "samples", "mistakes": see provide_pictures


def provide_pictures(**drawers: Callable[..., Figure]) -> None:
    """How `Run.show_samples` and `Run.show_mistakes` draw, given by `imgcls.visual.notebook` when it is
    imported: it decodes, predicts and draws, in layers above this one, which may not import them."""
    PICTURES.update(drawers)


def _drawer(name: str) -> Callable[..., Figure]:
    if name not in PICTURES:
        raise ImgclsError(
            f"Run.show_{name} draws with imgcls.visual.notebook: import it first "
            "(imgcls.train, imgcls.Run and imgcls.evaluate do)"
        )
    return PICTURES[name]


@dataclass
class HeldOut:
    """What training predicted on the split its metrics come from (test, else val): kept in memory
    by the Run that training returns, so the report written in the same process does not predict
    those photos again."""

    probs: Any  # (N, n_classes) numpy array
    labels: Any  # (N,) numpy int64
    paths: list[Path]  # the N readable files
    skipped: list  # BadImageError of the unreadable ones


class Run:
    """A run folder. `Run.create` makes a new one; `Run.open` reads an existing one (or any folder
    holding a model file). Reads are typed and cached; the write methods belong to training."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.held_out: HeldOut | None = None  # set by write_result, in the training process only

    # ------------------------------------------------------------------ identity

    @classmethod
    def create(cls, out: Path | str, name: str) -> Run:
        """A new folder `out/name` (or `name-2`...). DDP worker processes join their rank 0's folder."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and not is_rank_zero():
            return cls(inherited)
        run = cls(fresh_dir(Path(out), name))
        os.environ[RUN_DIR_ENV] = str(run.path)
        return run

    @classmethod
    def open(cls, path: Run | Path | str) -> Run:
        if isinstance(path, Run):
            return path
        folder = Path(path)
        if not folder.is_dir():
            raise ImgclsError(f"{display_path(folder)}: no such run folder")
        if not (folder / CONFIG).is_file() and not (folder / SPEC_FILE).is_file():
            raise ImgclsError(f"{display_path(folder)}: not an imgcls run folder (no {CONFIG} or {SPEC_FILE})")
        return cls(folder)

    @property
    def name(self) -> str:
        return self.path.name

    def __fspath__(self) -> str:  # a Run is path-like: open(run / ...), Path(run), os.fspath(run)
        return os.fspath(self.path)

    def __truediv__(self, other: str | Path) -> Path:
        return self.path / other

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _repr_html_(self) -> str:
        """Jupyter's view: name, recipe, classes, status, the epoch kept, metrics, data and files."""
        return run_card(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Run, os.PathLike, str)):
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ figures, for a notebook

    def show_curves(self) -> Figure:
        """Training and validation accuracy and loss per epoch (as curves.png), so far."""
        from imgcls.plots import curves_figure

        history = self.history
        if not history:
            raise ImgclsError(f"{display_path(self.history_path)}: no epoch has finished yet")
        return curves_figure(history, title=f"{self.name}: {self.config.get('recipe', {}).get('model', '')}")

    def show_samples(self, count: int = 15, split: str = "train", seed: int = 0) -> Figure:
        """`count` photos of one of the run's own splits, classes in turn, with class and file."""
        return _drawer("samples")(self, count=count, split=split, seed=seed)

    def show_mistakes(self, count: int = 16, data: str | Path | None = None) -> Figure:
        """The `count` most confident wrong predictions on the held-out split (or on other DATA)."""
        return _drawer("mistakes")(self, count=count, data=data)

    # ------------------------------------------------------------------ typed reads

    @cached_property
    def config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        if not path.is_file():
            return {}
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ImgclsError(f"{display_path(path)}: not readable YAML ({error})") from None
        if not isinstance(config, dict):
            raise ImgclsError(f"{display_path(path)}: not an imgcls run configuration")
        return config

    @cached_property
    def recipe(self) -> Recipe:
        from imgcls.recipes import Recipe

        if "recipe" not in self.config:
            raise ImgclsError(f"{display_path(self.path / CONFIG)}: missing; this folder holds a model, not a run")
        try:
            return Recipe.from_dict(self.config["recipe"])
        except (TypeError, ValueError, KeyError) as error:
            raise ImgclsError(
                f"{display_path(self.path / CONFIG)}: a recipe this imgcls cannot read ({error})"
            ) from None

    @property
    def transfer_recipe(self) -> Recipe | None:
        """The recipe of a transfer run (its backbone's features are cached under it), else None."""
        if "recipe" not in self.config or self.config["recipe"].get("model") != "transfer":
            return None
        return self.recipe

    @cached_property
    def options(self) -> TrainOptions:
        return TrainOptions.from_dict(self.config.get("options") or {}, out=self.path.parent, name=self.name)

    @cached_property
    def spec(self) -> ModelSpec:
        from imgcls.models.classifier import read_spec

        return read_spec(self.path)

    @cached_property
    def dataset(self) -> Dataset:
        """The exact split training used, with the label options it was trained with."""
        path = self.path / SPLIT
        if not path.is_file():
            raise ImgclsError(f"{display_path(path)}: missing; give the data to use")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            return from_manifest(manifest)
        except (ValueError, KeyError, TypeError) as error:
            raise ImgclsError(f"{display_path(path)}: not a valid split manifest ({error})") from None

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """Held-out metrics of the kept model ({} before training has finished)."""
        path = self.path / METRICS
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise ImgclsError(f"{display_path(path)}: not valid JSON ({error})") from None

    @property
    def history(self) -> list[dict]:
        try:
            return read_history(self.history_path)
        except (ValueError, KeyError, UnicodeDecodeError) as error:
            raise ImgclsError(f"{display_path(self.history_path)}: not a readable history ({error})") from None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of every file training could not read."""
        path = self.path / SKIPPED
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [tuple(line.split("\t", 1)) if "\t" in line else (line, "") for line in lines if line.strip()]

    @property
    def kept(self) -> dict[str, Any]:
        """Which stage, epoch and image size the saved model comes from ({} while training)."""
        return self.config.get("kept") or {}

    @property
    def data_root(self) -> Path | None:
        root = self.config.get("data", {}).get("root")
        return Path(root) if root else None

    @property
    def is_finished(self) -> bool:
        """Training wrote its result: `kept` (written last), or, for runs made before `kept`
        existed, the model files and metrics."""
        if self.kept:
            return True
        return all((self.path / name).is_file() for name in (SPEC_FILE, WEIGHTS_FILE, METRICS))

    def load_model(self) -> tuple[ImageClassifier, ModelSpec]:
        from imgcls.models.classifier import load_model

        return load_model(self.path)

    def decode_settings(self) -> DecodeSettings:
        """How the kept model's inputs are decoded: its size, channels and resize policy."""
        from imgcls.data.cache import DecodeSettings

        spec = self.spec
        return DecodeSettings((spec.image_size, spec.image_size), spec.channels, spec.resize)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, stage: str, kind: str) -> Path:
        """`checkpoints/best.ckpt` for whole-network training, `checkpoints/<stage>-<kind>.ckpt` else."""
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(f"unknown checkpoint kind {kind!r}; one of {CHECKPOINT_KINDS}")
        prefix = "" if stage == "train" else f"{stage}-"
        return self.checkpoints_dir / f"{prefix}{kind}.ckpt"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def resume_checkpoints(self, stage: str) -> list[Path]:
        """The checkpoints a stage can continue from, newest first: its last epoch's, a Ctrl-C one."""
        found = [path for path in (self.checkpoint(stage, kind) for kind in RESUMABLE_KINDS) if path.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)

    def resume_checkpoint(self, stage: str) -> Path | None:
        found = self.resume_checkpoints(stage)
        return found[0] if found else None

    def has_checkpoints(self) -> bool:
        return self.checkpoints_dir.is_dir() and any(self.checkpoints_dir.iterdir())

    @property
    def ray_dir(self) -> Path:
        """Ray Train's storage path for this run (its controller's state; our checkpoints stay above)."""
        return self.path / RAY

    # ------------------------------------------------------------------ products of the commands that read a run

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX

    @property
    def int8_onnx_path(self) -> Path:
        return self.path / INT8_ONNX

    @property
    def hf_dir(self) -> Path:
        return self.path / HF

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def onnx_is_stale(self) -> bool:
        """model.onnx is there but not newer than the weights (trained again since it was exported)."""
        return self.is_stale(self.onnx_path)

    def is_stale(self, export: Path) -> bool:
        """An export of the weights (model.onnx, model.int8.onnx) is there but not newer than them."""
        weights = self.weights_path
        return export.is_file() and weights.is_file() and export.stat().st_mtime_ns <= weights.stat().st_mtime_ns

    def output_dir(self, command: str) -> Path:
        """A folder for a command's pictures: `explain/`, `activations/`."""
        if command not in OUTPUT_DIRS:
            raise ValueError(f"unknown output folder {command!r}; one of {OUTPUT_DIRS}")
        return self.path / command

    def figure(self, name: str) -> Path:
        """`<name>.png` in the run folder: evaluation_confusion_matrix, roc, mistakes, suspects."""
        if name in (Path(CURVES).stem, Path(CONFUSION).stem):
            raise ValueError(f"{name}.png belongs to training")
        return self.path / f"{name}.png"

    # ------------------------------------------------------------------ writes (training only)

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES

    @property
    def confusion_path(self) -> Path:
        return self.path / CONFUSION

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def lr_find_path(self, stage: str, kind: str) -> Path:
        """The learning-rate finder's files (`--lr find`): `lr_find.png`/`.json` (the curve, its points)
        for whole-network training, `lr_find-<stage>.png`/`.json` else; "scratch": the hidden folder of
        the finder's temporary checkpoint, removed when it ends."""
        name = LR_FIND if stage == "train" else f"{LR_FIND}-{stage}"
        suffixes = {"plot": ".png", "points": ".json", "scratch": ".tmp"}
        if kind not in suffixes:
            raise ValueError(f"unknown learning-rate finder file {kind!r}; one of {tuple(suffixes)}")
        return self.path / f"{'.' if kind == 'scratch' else ''}{name}{suffixes[kind]}"

    @property
    def logs_dir(self) -> Path:
        """Lightning loggers' files (`--logger csv|tensorboard`): logs/<logger>/<stage>/."""
        return self.path / LOGS

    def write_start(self, config: dict[str, Any], dataset: Dataset) -> None:
        """What a run is before it trains: its configuration, its exact split and its classes."""
        self._write_config(config)
        atomic_write_json(self.path / SPLIT, dataset.split_manifest())
        atomic_write_json(self.path / CLASSES, dataset.classes)
        self._forget()

    def write_skipped(self, skipped: list) -> None:
        lines = [f"{display_path(error.path)}\t{error.reason}\n" for error in skipped]
        atomic_write_text(self.path / SKIPPED, "".join(lines))

    def write_result(
        self, model: ImageClassifier, spec: ModelSpec, metrics: dict, kept: dict, held_out: HeldOut | None = None
    ) -> None:
        """The model kept, its metrics, and `kept` in config.yaml, so model.json and config agree;
        `held_out`: the predictions the metrics come from (kept in memory, see `HeldOut`)."""
        from imgcls.models.classifier import save_model

        config = {**self.config, "kept": kept}
        save_model(self.path, model, spec)
        atomic_write_json(self.metrics_path, metrics)
        self._write_config(config)
        self._forget()
        self.held_out = held_out

    def _write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(_plain(config), sort_keys=False))

    def discard(self) -> None:
        """Remove a run that stopped before training anything (e.g. missing weights): no empty runs."""
        if not self.has_checkpoints():
            shutil.rmtree(self.path, ignore_errors=True)

    def _forget(self) -> None:
        for name in ("config", "recipe", "options", "spec", "dataset", "metrics"):
            self.__dict__.pop(name, None)


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples to lists, paths to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return display_path(value)
    return value
