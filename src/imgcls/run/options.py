"""`TrainOptions`: the settings of one training run that are not part of its recipe."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.data.labels import LabelOptions
from imgcls.errors import ImgclsError

LOCAL_ONLY = ("out", "name", "progress", "report", "address", "clock_start")  # how this process runs
ENGINES = ("local", "ray")
BUDGET_OFF = ("off", "0")  # --budget off: the recipe as it is, however long it takes
DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}  # --budget 90s | 10m | 1.5h | 300 (seconds)


def parse_duration(text: str | float, option: str = "--budget") -> float:
    """Seconds from "60s", "10m", "1.5h" or a plain number of seconds; anything else is an error
    that says how to write it."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", str(text).lower())
        unit = found and DURATION_UNITS.get(found[2] or "s")
        seconds = float(found[1]) * unit if unit else math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ImgclsError(f"{option} {text!r}: give a duration such as 60s, 10m or 1.5h")
    return seconds


@dataclass
class TrainOptions:
    out: Path = Path("runs")  # folder of run folders
    name: str | None = None  # run folder name (default: the recipe's); never overwritten
    seed: int = 0
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    engine: str = "local"  # local: this process (and Lightning's DDP); ray: Ray Train workers
    workers: int = 1  # Ray Train workers (engine ray)
    address: str | None = None  # Ray cluster to join (engine ray); None starts a local one
    logger: tuple[str, ...] = ()  # experiment trackers: csv, tensorboard, mlflow (imgcls.training.loggers)
    class_weights: str | None = None  # "auto": inverse class frequency
    lr_find: tuple[str, ...] = ()  # recipe fields (lr, fine_tune_lr) the learning-rate finder picks (--lr find)
    data_dir: Path | None = None  # where to look for a built-in dataset
    labels: LabelOptions | None = None  # file names or a CSV instead of class folders
    progress: bool = True
    report: bool = True  # write report.html at the end (a failure there is a warning, not a failed training)
    budget: float | None = None  # seconds a transfer training may take (--budget 60s; 0 = off): it picks what fits
    clock_start: float | None = None  # time.perf_counter() the budget counts from (the CLI: its start); None: now

    def __post_init__(self) -> None:
        self.logger = (self.logger,) if isinstance(self.logger, str) else tuple(self.logger or ())
        if self.engine not in ENGINES:
            raise ImgclsError(f"--engine {self.engine!r}: use {' or '.join(ENGINES)}")
        if self.workers < 1:
            raise ImgclsError(f"--workers {self.workers}: give at least 1")
        if self.budget is not None:
            self.budget = 0.0 if str(self.budget).strip().lower() in BUDGET_OFF else parse_duration(self.budget)
        if self.workers > 1 and self.engine != "ray":
            raise ImgclsError("--workers is for --engine ray; on one machine use --devices N")
        self._check_lr_find()

    def _check_lr_find(self) -> None:
        """Fields the finder can pick; not under Ray Train, which starts every worker at once, so that
        no process could search before the others train."""
        self.lr_find = tuple(self.lr_find or ())
        if not self.lr_find:
            return
        from imgcls.recipes import LR_FIELDS  # here: reading a run's options imports no torch

        unknown = [name for name in self.lr_find if name not in LR_FIELDS]
        if unknown:
            raise ImgclsError(f"lr_find {unknown}: the learning-rate finder picks {' or '.join(LR_FIELDS)}")
        if self.engine == "ray":
            options = " and ".join(f"{LR_FIELDS[name]} find" for name in self.lr_find)
            raise ImgclsError(
                f"{options} is not supported with --engine ray (every Ray worker starts at once): "
                "give a number, e.g. one that a run with --engine local picked (its config.yaml records it)"
            )

    def as_dict(self) -> dict[str, Any]:
        """What config.yaml keeps: everything but how this process runs."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in LOCAL_ONLY}
        values["labels"] = self.labels.as_dict() if self.labels else None
        values["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        values["logger"] = list(self.logger)
        values["lr_find"] = list(self.lr_find)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], **local: Any) -> TrainOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        labels = values.pop("labels", None)
        if labels:
            values["labels"] = LabelOptions.from_dict(labels)
        if values.get("data_dir"):
            values["data_dir"] = Path(values["data_dir"])
        return cls(**values, **local)
