"""`imgcls tune` and `imgcls.tune(...)`: a recipe search within a time budget, with Optuna.

Every trial is one ordinary `imgcls.api.train` run (OUT/NAME/trials/trial-NNN, a run folder like any
other); the study folder OUT/NAME holds `trials.jsonl` (one row per trial, rewritten atomically
after each) and `study.json` (the best trial, the budget, the seconds used).

- Trial 0 is the recipe as given (`study.enqueue_trial`), so tuning is never worse than training on
  val. Settings the caller fixed are not searched.
- The objective is validation accuracy (ties: lower val loss). Choosing on val makes the best
  trial's val figure optimistic; when the data has a test split, its test figure is reported too.
- The budget counts the whole call. A trial is started only when its estimated cost fits in what
  remains: the estimate comes from the trials so far, per cache key (what a trial computes once and
  caches: backbone features by size, resize, views and mirrors), so a configuration whose features
  are cached is estimated at its warm cost. A started trial always finishes.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from imgcls.api import RENAMED, data_or_default, resolve
from imgcls.api import train as train_run
from imgcls.errors import ImgclsError, first_line
from imgcls.files import atomic_write_json, atomic_write_text, display_path, fresh_dir
from imgcls.recipes import Recipe
from imgcls.run import Run, parse_duration

log = logging.getLogger("imgcls")

# One nested dict per recipe family (airbench's `hyp` style), every value with its unit. A range
# is widened to hold the recipe's own value and a choice list gains it, so trial 0 lies inside;
# a setting the recipe leaves at 0 is not searched on a log range (which has no 0).
SEARCH_SPACES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "transfer": {
        "features": {  # what the cached backbone features depend on: a new combination computes them once
            "image_size": {"choices": [192, 224, 256], "unit": "px, square"},
            "resize": {"choices": ["crop", "squash", "pad"], "unit": "resize policy"},
            "flip_tta": {"choices": [False, True], "unit": "photo and mirror averaged"},
            "views": {"choices": [1, 2], "unit": "feature views per training photo"},
        },
        "head": {
            "head_fit": {"choices": ["lbfgs-cv", "epochs"], "unit": "logistic regression by CV | optimizer epochs"},
            "lr": {"low": 3e-4, "high": 3e-2, "log": True, "unit": "peak learning rate"},
            "weight_decay": {"low": 1e-4, "high": 1e-1, "log": True, "unit": "decoupled weight decay"},
        },
        "fine_tune": {  # offered only while the remaining budget fits a fine-tune trial
            "fine_tune": {"choices": [False, True], "unit": "stage 2: unfreeze the last blocks"},
            "fine_tune_lr": {"low": 1e-5, "high": 1e-3, "log": True, "unit": "peak learning rate of stage 2"},
            "fine_tune_epochs": {"low": 1, "high": 3, "unit": "epochs of stage 2"},
        },
    },
    "from-scratch": {
        "optimiser": {
            "lr": {"low": 3e-4, "high": 1e-2, "log": True, "unit": "peak learning rate"},
            "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True, "unit": "weight decay"},
            "label_smoothing": {"low": 0.0, "high": 0.2, "unit": "share of the target spread over classes"},
        },
        "schedule": {  # capped at the epochs the remaining budget fits
            "epochs": {"times": [0.5, 2.0], "unit": "epochs (times the recipe's)"},
        },
    },
}
FINE_TUNE_FIELDS = ("fine_tune_lr", "fine_tune_epochs")  # searched only when the trial fine-tunes
HEAD_EPOCH_FIELDS = ("lr", "weight_decay")  # transfer: searched only when the head trains for epochs
EPOCH_FIELDS = ("epochs", "fine_tune_epochs")  # ranges capped at what the remaining budget fits
CACHE_FIELDS = {  # what a trial computes once and later trials of the same values read from a cache
    "transfer": ("image_size", "resize", "views", "flip_tta", "fine_tune"),
    "from-scratch": ("image_size", "resize", "channels"),
}
SAFETY = 1.2  # estimates are multiplied by this: a started trial always runs to its end
FINE_TUNE_EPOCH_GUESS = 2.0  # a fine-tune epoch before one was measured: this many cold feature passes
MAX_SKIPS_IN_A_ROW = 3  # sampled trials that do not fit, in a row, before the study stops
MAX_FAILURES_IN_A_ROW = 3  # failed trials in a row (e.g. weights missing for every one) before it stops
OWN_SETTINGS = ("out", "name", "seed", "progress", "resume", "budget", "trials")  # tune's, not the trials'
TRIALS_FILE, STUDY_FILE, TRIALS_DIR = "trials.jsonl", "study.json", "trials"


class _CallableModule(types.ModuleType):
    """Importing `imgcls.tune` sets the package attribute `imgcls.tune` to this module, over the
    function `imgcls/__init__.py` exports: calling the module calls `tune`, so `imgcls.tune(...)`
    works whichever came first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Tuned:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


# --------------------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """One row of trials.jsonl. `state`: complete | pruned | failed | skipped-for-time."""

    number: int
    state: str
    settings: dict[str, Any]  # every searched value of this trial
    changed: dict[str, Any]  # those that differ from the recipe
    seconds: float = 0.0
    estimated_seconds: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None  # when the data has a test split; never used to choose
    test_loss: float | None = None
    run: str | None = None
    message: str | None = None


@dataclass
class Tuned:
    """What `tune` returns: the study folder, every trial, the best one and why the study stopped
    (trials | budget | failures | interrupted)."""

    path: Path
    recipe: str
    budget: float
    seconds: float
    stopped: str
    trials: list[TrialRecord] = field(default_factory=list)
    search_space: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> TrialRecord | None:
        """Highest val accuracy, then lowest val loss, then the earlier trial (trial 0 wins ties)."""
        done = [t for t in self.trials if t.state == "complete" and t.val_accuracy is not None]
        if not done:
            return None
        return max(done, key=lambda t: (t.val_accuracy, -(t.val_loss if t.val_loss is not None else math.inf)))

    @property
    def best_run(self) -> Run | None:
        best = self.best
        return Run.open(best.run) if best and best.run else None

    def study_summary(self) -> dict[str, Any]:
        """study.json."""
        best = self.best
        states = [t.state for t in self.trials]
        return {
            "recipe": self.recipe,
            "objective": "val_accuracy (ties: lower val_loss); the best's val figure is optimistic, see test",
            "budget_seconds": self.budget,
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
            "trials": {state: states.count(state) for state in dict.fromkeys(states)},
            "best": None if best is None else {k: v for k, v in asdict(best).items() if k != "message"},
            "search_space": self.search_space,
        }

    def __repr__(self) -> str:
        best = self.best
        found = f"best trial {best.number}: val accuracy {best.val_accuracy:.2%}" if best else "no trial finished"
        return f"Tuned({display_path(self.path)!r}, {len(self.trials)} trials, {found})"


# --------------------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Param:
    """One searched recipe field: `choices`, or a `low`..`high` range (int when both are ints)."""

    name: str
    unit: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: optuna.Trial, high: float | None = None) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        high = self.high if high is None else high
        if self.is_int:
            return trial.suggest_int(self.name, self.low, int(high))
        return trial.suggest_float(self.name, self.low, high, log=self.log)

    def as_dict(self) -> dict[str, Any]:
        shown = {"choices": list(self.choices)} if self.choices is not None else {"low": self.low, "high": self.high}
        return {**shown, **({"log": True} if self.log else {}), "unit": self.unit}


def family(recipe: Recipe) -> str:
    return "transfer" if recipe.model == "transfer" else "from-scratch"


def search_space(recipe: Recipe, fixed: set[str]) -> list[Param]:
    """The family's space around `recipe`, without the fields in `fixed` (and, when the recipe cannot
    fine-tune at all, without fine-tuning)."""
    found = []
    for group in SEARCH_SPACES[family(recipe)].values():
        for name, spec in group.items():
            if name in fixed or (name in FINE_TUNE_FIELDS and "fine_tune" in fixed and not recipe.fine_tune):
                continue
            param = _around(name, spec, getattr(recipe, name))
            if param is not None:
                found.append(param)
    return found


def _around(name: str, spec: dict[str, Any], value: Any) -> Param | None:
    """`spec` with the recipe's `value` inside it; None when it cannot be (0 on a log range)."""
    unit = spec["unit"]
    if "choices" in spec:
        choices = list(spec["choices"])
        return Param(name, unit, choices=tuple(choices if value in choices else [value, *choices]))
    if "times" in spec:  # epochs: a share of the recipe's
        low, high = (max(1, round(value * share)) for share in spec["times"])
        return Param(name, unit, low=min(low, value), high=max(high, value))
    if spec.get("log") and value <= 0:
        return None
    low, high = spec["low"], spec["high"]
    if isinstance(low, int) and isinstance(high, int) and isinstance(value, int):
        return Param(name, unit, low=min(low, value), high=max(high, value))
    return Param(name, unit, low=float(min(low, value)), high=float(max(high, value)), log=bool(spec.get("log")))


def baseline(recipe: Recipe, space: list[Param]) -> dict[str, Any]:
    """Trial 0: the recipe's own value of every searched field that is active for it."""
    return {p.name: getattr(recipe, p.name) for p in space if _active(p.name, recipe, {})}


def _active(name: str, recipe: Recipe, values: dict[str, Any]) -> bool:
    """Whether a field does anything given the values chosen so far: fine-tuning settings only when
    the trial fine-tunes, a transfer head's learning rate only when it trains for epochs."""
    if name in FINE_TUNE_FIELDS:
        return bool(values.get("fine_tune", recipe.fine_tune))
    if name in HEAD_EPOCH_FIELDS and recipe.model == "transfer":
        return values.get("head_fit", recipe.head_fit) == "epochs"
    return True


def space_summary(recipe: Recipe, space: list[Param]) -> dict[str, Any]:
    """The space as searched, nested by group as in SEARCH_SPACES (for study.json)."""
    names = {p.name: p for p in space}
    summary: dict[str, Any] = {}
    for group, fields in SEARCH_SPACES[family(recipe)].items():
        chosen = {name: names[name].as_dict() for name in fields if name in names}
        if chosen:
            summary[group] = chosen
    return {family(recipe): summary}


def suggest(trial: optuna.Trial, recipe: Recipe, space: list[Param], fits: Callable[[dict], bool]) -> dict[str, Any]:
    """This trial's values (Optuna's define-by-run): fine-tuning is offered only when a fine-tune
    trial fits the remaining budget, and epoch ranges stop at what fits."""
    values: dict[str, Any] = {}
    for param in space:
        if not _active(param.name, recipe, values):
            continue
        if param.name == "fine_tune" and not fits({**values, "fine_tune": True}):
            values["fine_tune"] = False  # not offered: no time left for stage 2
            continue
        high = _most_epochs(param, values, fits) if param.name in EPOCH_FIELDS and param.is_int else None
        values[param.name] = param.suggest(trial, high)
    return values


def _most_epochs(param: Param, values: dict[str, Any], fits: Callable[[dict], bool]) -> int:
    """The largest value of an epoch count that fits the budget (its `high` when none is known to)."""
    for epochs in range(int(param.high), int(param.low) - 1, -1):
        if fits({**values, param.name: epochs}):
            return epochs
    return int(param.high)


# --------------------------------------------------------------------------- what a trial costs


@dataclass
class Cost:
    """A finished trial's seconds: `fixed` (start-up, decoding or features, evaluation, export)
    and the slowest epoch of each stage, from its history.csv."""

    key: tuple
    first: bool  # the first trial of its key: it filled the cache
    fixed: float
    per_epoch: dict[str, float]
    pixels: int  # image_size^2 x feature passes per photo: what a cold start scales with


class CostModel:
    """Estimates a trial's seconds from the trials so far, per cache key."""

    def __init__(self, recipe: Recipe):
        self.family = family(recipe)
        self.costs: list[Cost] = []

    def key(self, recipe: Recipe) -> tuple:
        return tuple(getattr(recipe, name) for name in CACHE_FIELDS[self.family])

    def add(self, recipe: Recipe, seconds: float, history: list[dict]) -> None:
        per_epoch: dict[str, float] = {}
        for row in history:
            stage = row.get("stage", "train")
            per_epoch[stage] = max(per_epoch.get(stage, 0.0), row.get("seconds", 0.0))
        trained = sum(row.get("seconds", 0.0) for row in history)
        key = self.key(recipe)
        first = all(cost.key != key for cost in self.costs)
        self.costs.append(Cost(key, first, max(0.0, seconds - trained), per_epoch, _pixels(recipe)))

    def estimate(self, recipe: Recipe) -> float | None:
        """Seconds with the safety margin; None before any trial has finished (trial 0 runs anyway)."""
        if not self.costs:
            return None
        fixed = self._fixed(recipe)
        epochs = sum(count * self._per_epoch(stage, fixed) for stage, count in _epochs(recipe).items())
        return SAFETY * (fixed + epochs)

    def _fixed(self, recipe: Recipe) -> float:
        """Warm when this key ran before (the slowest run after the first; the first itself when it is
        all there is), else the slowest cold start, scaled up to this trial's pixels."""
        same = [c for c in self.costs if c.key == self.key(recipe)]
        warm = [c.fixed for c in same if not c.first]
        if same:
            return max(warm) if warm else max(c.fixed for c in same)
        pixels = _pixels(recipe)
        return max(c.fixed * max(1.0, pixels / c.pixels) for c in self.costs if c.first)

    def _per_epoch(self, stage: str, cold: float) -> float:
        seen = [c.per_epoch[stage] for c in self.costs if stage in c.per_epoch]
        if seen:
            return max(seen)
        return FINE_TUNE_EPOCH_GUESS * cold if stage == "fine-tune" else 0.0

    def cheapest(self, recipes: list[Recipe]) -> float:
        """The cheapest estimate among these (the configurations already tried): below it nothing fits."""
        found = [self.estimate(recipe) for recipe in recipes]
        return min((f for f in found if f is not None), default=0.0)


def _pixels(recipe: Recipe) -> int:
    passes = recipe.views + int(recipe.flip_tta) if recipe.model == "transfer" else 1
    return recipe.image_size**2 * passes


def _epochs(recipe: Recipe) -> dict[str, int]:
    """Epochs per stage: transfer trains `head` (then `fine-tune`), everything else `train`."""
    if recipe.model != "transfer":
        return {"train": recipe.epochs}
    head = 1 if recipe.head_fit == "lbfgs-cv" else recipe.epochs  # one L-BFGS fit: history's one row
    return {"head": head, "fine-tune": recipe.fine_tune_epochs if recipe.fine_tune else 0}


# --------------------------------------------------------------------------- the study


def tune(
    data: str | Path | None = None,
    recipe: str | Recipe | None = None,
    *,
    budget: str | float = "10m",
    trials: int | None = None,
    out: str | Path = "runs",
    name: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **fixed_settings: Any,
) -> Tuned:
    """Search variants of `recipe` on DATA for `budget` (e.g. "10m"; at most `trials` trials) and
    return the study; `fixed_settings` (any `imgcls.train` keyword) hold for every trial and are not
    searched. Trials write no report.html unless `report=True` (`imgcls report BEST` writes one)."""
    started = time.monotonic()
    seconds = parse_duration(budget)
    if trials is not None and trials < 1:
        raise ImgclsError(f"--trials {trials}: give at least 1")
    fixed = _fixed_settings(fixed_settings)
    base, options = resolve(recipe, fixed)  # unknown recipe or setting: said before anything is written
    _check_data(data, base, options, progress)
    space = search_space(base, {RENAMED.get(k, k) for k in fixed})
    folder = fresh_dir(Path(out), name or f"{base.name}-tune")
    result = Tuned(folder, base.name, seconds, 0.0, "trials", search_space=space_summary(base, space))
    search = _Search(data, recipe, base, space, {**fixed, "seed": seed, "progress": progress}, result, started)
    with _quiet_optuna(), _CtrlC() as ctrl_c:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.enqueue_trial(baseline(base, space))  # trial 0: the recipe as it is
        result.stopped = search.run(study, trials, ctrl_c)
    result.seconds = time.monotonic() - started
    _write(result)
    if result.best is None and result.stopped != "interrupted":
        failed = next((t for t in result.trials if t.message), None)
        said = f"; trial {failed.number}: {failed.message}" if failed else ""
        raise ImgclsError(f"no trial finished (see {display_path(folder / TRIALS_FILE)}){said}")
    return result


class _Search:
    """The ask-and-tell loop (an in-memory Optuna study; trials.jsonl is the record users read): ask
    for a trial, train it only when its estimate fits the time left, tell Optuna the result."""

    def __init__(self, data, recipe, base: Recipe, space: list[Param], settings: dict, result: Tuned, started: float):
        self.data, self.recipe, self.base, self.space, self.started = data, recipe, base, space, started
        self.settings = {"report": False, **settings}
        self.result = result
        self.costs = CostModel(base)
        self.tried: list[Recipe] = []

    def run(self, study: optuna.Study, trials: int | None, ctrl_c: _CtrlC) -> str:
        """Trials until `trials` have trained, the budget has room for none, trials keep failing or
        skipping, or Ctrl-C; returns which (trials | budget | failures | interrupted)."""
        trained = skips = failures = 0
        try:
            while trials is None or trained < trials:
                remaining = self.result.budget - (time.monotonic() - self.started)
                if remaining <= 0 or (self.tried and remaining < self.costs.cheapest(self.tried)):
                    return "budget"
                trial = study.ask()
                values = suggest(trial, self.base, self.space, lambda v, left=remaining: self._fits(v, left))
                estimate = self.costs.estimate(self.base.override(**values))
                if estimate is not None and estimate > remaining:
                    self._record(study, trial, TrialRecord(**self._row(trial, values), estimated_seconds=estimate))
                    skips += 1
                    if skips >= MAX_SKIPS_IN_A_ROW:
                        return "budget"
                    continue
                ctrl_c.arm()
                record = self._train(trial, values, estimate, ctrl_c)
                self._record(study, trial, record)
                trained, skips = trained + 1, 0
                failures = failures + 1 if record.state == "failed" else 0
                if ctrl_c.pressed.is_set():
                    return "interrupted"
                if failures >= MAX_FAILURES_IN_A_ROW:
                    return "failures"
        except KeyboardInterrupt:  # between trials: those so far are recorded
            return "interrupted"
        return "trials"

    def _fits(self, values: dict[str, Any], remaining: float) -> bool:
        estimate = self.costs.estimate(self.base.override(**values))
        return estimate is None or estimate <= remaining

    def _row(self, trial: optuna.Trial, values: dict[str, Any]) -> dict[str, Any]:
        changed = {k: v for k, v in values.items() if getattr(self.base, k) != v}
        return {"number": trial.number, "state": "skipped-for-time", "settings": values, "changed": changed}

    def _train(self, trial: optuna.Trial, values: dict, estimate: float | None, ctrl_c: _CtrlC) -> TrialRecord:
        """One ordinary training run; an ImgclsError makes it a failed trial, and so does Ctrl-C
        (which also stops the study)."""
        row = {**self._row(trial, values), "estimated_seconds": estimate}
        out, name = self.result.path / TRIALS_DIR, f"trial-{trial.number:03d}"
        log.info("trial %d: %s", trial.number, shown(row["changed"]) or "the recipe as it is")
        started = time.monotonic()
        try:
            # trial 0 is `imgcls train` as it is (its --budget may choose); the others train what was sampled
            planned = {} if trial.number == 0 else {"budget": "off"}
            run = train_run(self.data, self.recipe, **self.settings, **values, **planned, out=out, name=name)
        except (ImgclsError, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt):
                ctrl_c.pressed.set()
            message = first_line(error) if isinstance(error, ImgclsError) else ""
            if ctrl_c.pressed.is_set():
                message = f"interrupted (Ctrl-C){': ' if message else ''}{message}"
            folder = display_path(out / name) if (out / name).is_dir() else None
            return TrialRecord(
                **row | {"state": "failed"}, seconds=time.monotonic() - started, run=folder, message=message
            )
        seconds = time.monotonic() - started
        figures = _figures(run)
        if figures["val_accuracy"] is None:
            message = "the run recorded no validation accuracy"
            return TrialRecord(
                **row | {"state": "failed"}, seconds=seconds, run=display_path(run.path), message=message
            )
        trained = self.base.override(**values)
        self.costs.add(trained, seconds, run.history)
        self.tried.append(trained)
        return TrialRecord(**row | {"state": "complete"}, seconds=seconds, run=display_path(run.path), **figures)

    def _record(self, study: optuna.Study, trial: optuna.Trial, record: TrialRecord) -> None:
        """Tell Optuna, keep the row, rewrite trials.jsonl and study.json (atomically), say it."""
        if record.state == "complete":
            study.tell(trial, record.val_accuracy)
        else:
            study.tell(trial, state=TrialState.PRUNED if record.state == "pruned" else TrialState.FAIL)
        self.result.trials.append(record)
        self.result.seconds = time.monotonic() - self.started
        _write(self.result)
        _log_trial(record)


def _figures(run: Run) -> dict[str, float | None]:
    """Val accuracy and loss of the model the run kept, and its test figures when it has a test split:
    metrics.json is on test when there is one (else val), so val then comes from the kept epoch's
    history row."""
    metrics = run.metrics
    figures = {"val_accuracy": None, "val_loss": None, "test_accuracy": None, "test_loss": None}
    split = metrics.get("split", "val")
    if split in ("val", "test"):
        figures[f"{split}_accuracy"], figures[f"{split}_loss"] = metrics.get("accuracy"), metrics.get("loss")
    if split != "val":
        kept = run.kept
        rows = [r for r in run.history if r.get("stage") == kept.get("stage") and r.get("epoch") == kept.get("epoch")]
        if rows:
            figures["val_accuracy"], figures["val_loss"] = rows[-1].get("val_accuracy"), rows[-1].get("val_loss")
    return figures


def _fixed_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The caller's settings for every trial: None means "not given"; tune's own names are not theirs."""
    if settings.get("resume") is not None:
        raise ImgclsError("tune starts new trials; resume one trial with `imgcls train --resume TRIAL_RUN`")
    return {k: v for k, v in settings.items() if v is not None and k not in OWN_SETTINGS}


def _check_data(data, recipe: Recipe, options, progress: bool) -> None:
    """Missing or unusable data is one message before the study folder is made, not N failed trials."""
    from imgcls.data.discover import discover

    data = data_or_default(data, options)
    discover(data, recipe.val_split, options.seed, options.data_dir, progress=progress, labels=options.labels)


def _write(result: Tuned) -> None:
    rows = "".join(json.dumps(asdict(t)) + "\n" for t in result.trials)
    atomic_write_text(result.path / TRIALS_FILE, rows)
    atomic_write_json(result.path / STUDY_FILE, result.study_summary())


def _log_trial(record: TrialRecord) -> None:
    if record.state == "complete":
        log.info(
            "trial %d: val accuracy %.2f%%, val loss %.4f, %.1f s",
            record.number,
            100 * record.val_accuracy,
            record.val_loss if record.val_loss is not None else math.nan,
            record.seconds,
        )
    elif record.state == "skipped-for-time":
        log.info(
            "trial %d skipped: about %.0f s, more than the budget has left", record.number, record.estimated_seconds
        )
    else:
        log.warning("trial %d %s: %s", record.number, record.state, record.message)


def shown(values: dict[str, Any]) -> str:
    """Settings as `imgcls tune` prints them: key=value, floats to 3 digits."""
    return " ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO line per trial would repeat ours."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


class _CtrlC:
    """Notices Ctrl-C for the study. Lightning answers it by ending the fit, raising an ImgclsError
    and ignoring SIGINT from then on: `pressed` is how the study knows to stop, and `arm` (before
    every trial) takes SIGINT back. The original handler returns at the end."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.getsignal(signal.SIGINT)
            self._installed = True
            self.arm()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)

    def arm(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.pressed.set()
        raise KeyboardInterrupt
