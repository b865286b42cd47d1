"""`report.html`: one self-contained page per run that shows what the model learned and where it fails.

Sections: headline numbers, per-class metrics, confusion matrix, ROC, training curves, the most
confident mistakes, Grad-CAM on a few of them, likely mislabelled images (suspects), the data
(counts, skipped files, duplicates and leakage from `data check`) and config.yaml.

Every picture is embedded as a base64 data URI, so the file opens from disk, can be mailed or
attached to a ticket, and needs no server. Every string that comes from the user's files (class
and file names, paths, config values) goes through Jinja2's autoescaping. A section that cannot be
computed (data folder moved, no Grad-CAM layer...) says why instead of failing the whole report.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment

from imgcls.data.decode import display_path
from imgcls.errors import ImgclsError

log = logging.getLogger("imgcls")
REPORT_FILE = "report.html"
SHOWN_MISTAKES = 12
SHOWN_SUSPECTS = 12
SUSPECT_ROWS = 25
GRAD_CAM_EXAMPLES = 6
TILE_PIXELS = 256
NEAR_DUPLICATE_LIMIT = 20_000  # images: above it the all-pairs near-duplicate search takes minutes


@dataclass
class Tile:
    """One picture of a gallery: image, caption lines (css class, text), the full path on hover."""

    image: str
    lines: list[tuple[str, str]]
    title: str = ""


@dataclass
class Section:
    """What a section shows, or why it could not be made (`note`)."""

    data: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    seconds: float = 0.0


def write_report(run: Path | str, suspects: bool | None = None, check: bool = True) -> Path:
    """Write RUN/report.html (replacing an earlier report) and return its path.

    `suspects`: None = only when cheap (a transfer run with a frozen backbone: training cached its
    features), True = always, False = never. `check`: run `data check` on the run's data
    (reads every file once: ~13 s for 3,000 photos)."""
    from imgcls.runs import resolve_run
    from imgcls.suspects import one_torch_thread

    run = resolve_run(run)
    with one_torch_thread():  # batch-1 Grad-CAM and small heads: threads only add waiting
        return _write(run, suspects, check)


def _write(run: Path, suspects: bool | None, check: bool) -> Path:
    context = {
        "run": run.name,
        "run_path": display_path(run.resolve()),
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
        **_overview(run),
    }
    predicted = _section(lambda: _predictions(run))
    context["mistakes"] = _section(lambda: _mistakes(predicted.data["predictions"]), after=predicted)
    context["roc"] = _section(lambda: _roc(predicted.data["predictions"]), after=predicted)
    context["grad_cam"] = _section(lambda: _grad_cam(run, predicted.data["predictions"]), after=predicted)
    context["suspects"] = _section(lambda: _suspects(run, suspects))
    context["check"] = _section(lambda: _check(run) if check else _skip("data check skipped (check=False)"))
    path = run / REPORT_FILE
    path.write_text(_template().render(**context), encoding="utf-8")
    timings = {"predictions": predicted.seconds} | {k: v.seconds for k, v in context.items() if isinstance(v, Section)}
    log.info("wrote %s (%s)", path, ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return path


def write_report_safely(run: Path) -> Path | None:
    """The end of training: a failed report is a warning, never a failed training."""
    try:
        return write_report(run)
    except Exception as error:  # the model is saved already; the report can be made later
        log.warning("could not write %s (%s); try: imgcls report %s", run / REPORT_FILE, error, run)
        return None


# --------------------------------------------------------------------------- sections


def _section(make: Callable[[], dict], after: Section | None = None) -> Section:
    if after is not None and after.note is not None:
        return Section(note=after.note)
    started = time.perf_counter()
    try:
        result = make()
    except _Skipped as skipped:
        return Section(note=str(skipped))
    except Exception as error:  # one broken section must not cost the rest of the report
        log.warning("report: %s", error)
        described = str(error) if isinstance(error, (ImgclsError, OSError)) else f"{type(error).__name__}: {error}"
        return Section(note=f"could not be computed: {described}")
    return Section(data=result, seconds=time.perf_counter() - started)


class _Skipped(Exception):
    pass


def _skip(reason: str) -> dict:
    raise _Skipped(reason)


def _overview(run: Path) -> dict:
    """Headline numbers, per-class table, the run's own figures, data counts and config.yaml."""
    from imgcls.runs import read_config

    config_text = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    config = read_config(run) if config_text else {}
    metrics = _json(run / "metrics.json")
    spec = _json(run / "model.json")
    recipe = config.get("recipe", {})
    return {
        "config_text": config_text,
        "recipe": recipe.get("name", ""),
        "architecture": _architecture(spec),
        "data_root": str(config.get("data", {}).get("root", "")),
        "image_size": spec.get("image_size"),
        "metrics": metrics,
        "kpis": _kpis(metrics),
        "per_class": metrics.get("per_class", {}),
        "figures": {name: _file_uri(run / f"{name}.png") for name in ("curves", "confusion_matrix")},
        "counts": _counts(run, config),
        "skipped": _skipped_files(run),
    }


def _kpis(metrics: dict) -> list[tuple[str, str, str]]:
    if not metrics:
        return []
    split = metrics.get("split", "held-out")
    kpis = [
        ("Accuracy", f"{metrics['accuracy']:.2%}", f"{split} split"),
        ("Loss", f"{metrics['loss']:.4f}", "cross-entropy"),
        ("Macro F1", f"{metrics['macro_f1']:.3f}", "mean over classes"),
    ]
    if "roc_auc" in metrics:
        kpis.append(("ROC AUC", f"{metrics['roc_auc']:.4f}", f"{metrics['classes'][1]} as positive"))
    kpis.append(("Images", f"{metrics['n_images']:,}", f"{len(metrics['classes'])} classes"))
    return kpis


def _architecture(spec: dict) -> str:
    backbone = spec.get("arch_args", {}).get("backbone")
    return f"{spec.get('architecture', '?')} ({backbone})" if backbone else spec.get("architecture", "?")


def _counts(run: Path, config: dict) -> dict:
    """Images per class and split, from split.json (the exact files), else from config.yaml."""
    if (run / "split.json").is_file():
        from imgcls.data.discover import load_manifest

        counts = load_manifest(run / "split.json").counts()
    else:
        counts = config.get("data", {}).get("counts", {})
    classes = sorted({name for per_class in counts.values() for name in per_class}, key=str)
    classes = config.get("data", {}).get("classes") or classes
    rows = [(name, [counts[s].get(name, 0) for s in counts]) for name in classes]
    return {"splits": list(counts), "rows": rows, "totals": [sum(counts[s].values()) for s in counts]}


def _skipped_files(run: Path) -> list[tuple[str, str]]:
    path = run / "skipped_files.txt"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [tuple(line.split("\t", 1)) if "\t" in line else (line, "") for line in lines if line.strip()]


def _predictions(run: Path) -> dict:
    from imgcls.evaluation import predict_run

    return {"predictions": predict_run(run, cached_features=True)}


def _mistakes(predicted) -> dict:
    from imgcls.evaluation import top_mistakes

    found = top_mistakes(predicted, SHOWN_MISTAKES)
    wrong = int((predicted.probs.argmax(1) != predicted.labels).sum())
    tiles = [
        Tile(
            _photo_uri(m.path),
            [
                ("name", m.path.name),
                ("", f"true: {m.true_label}"),
                ("bad", f"predicted: {m.predicted_label} {m.probability:.1%}"),
            ],
            display_path(m.path),
        )
        for m in found
    ]
    return {"described": predicted.described, "wrong": wrong, "total": len(predicted.labels), "tiles": tiles}


def _roc(predicted) -> dict:
    from imgcls.evaluation import classification_metrics, roc_curve_points
    from imgcls.visual.plots import plot_roc

    if len(predicted.classes) != 2 or len(set(predicted.labels.tolist())) != 2:
        _skip("ROC curves are drawn for two classes")
    auc = classification_metrics(predicted.probs, predicted.labels, predicted.classes)["roc_auc"]
    fpr, tpr = roc_curve_points(predicted.probs[:, 1], predicted.labels)
    with tempfile.TemporaryDirectory() as folder:
        path = plot_roc(fpr, tpr, auc, predicted.classes[1], Path(folder) / "roc.png")
        return {"image": _file_uri(path)}


def _grad_cam(run: Path, predicted) -> dict:
    """Grad-CAM of the worst mistakes and of the most confident correct prediction of each class."""
    from imgcls.explain import explain, grad_cam_layer, supports_grad_cam
    from imgcls.inference import Classifier

    classifier = Classifier.load(run, engine="torch")
    if not supports_grad_cam(classifier):
        _skip(f"no Grad-CAM: {classifier.spec.architecture} has no convolutional feature map larger than 1x1")
    right = predicted.probs.argmax(1) == predicted.labels
    tiles = []
    for index in _grad_cam_examples(predicted):
        path = predicted.paths[index]
        explanation = explain(classifier, path)
        verdict = "good" if right[index] else "bad"
        tiles.append(
            Tile(
                _array_uri(explanation.overlay),
                [
                    ("name", path.name),
                    ("", f"true: {predicted.classes[predicted.labels[index]]}"),
                    (verdict, f"predicted: {explanation.label} {explanation.probability:.1%}"),
                ],
                display_path(path),
            )
        )
    return {"tiles": tiles, "layer": grad_cam_layer(classifier)}


def _grad_cam_examples(predicted) -> list[int]:
    """Indices of the worst mistakes (half the examples at most), then the most confident correct
    image of each class."""
    labels = predicted.labels
    true_probs = predicted.probs[np.arange(len(labels)), labels]
    right = predicted.probs.argmax(1) == labels
    worst = [int(i) for i in np.argsort(true_probs, kind="stable") if not right[i]][: GRAD_CAM_EXAMPLES // 2]
    best = []
    for label in range(len(predicted.classes)):
        members = np.flatnonzero(right & (labels == label))
        if len(members):
            best.append(int(members[np.argmax(true_probs[members])]))
    return (worst + best)[:GRAD_CAM_EXAMPLES]


def _suspects(run: Path, wanted: bool | None) -> dict:
    from imgcls.suspects import find_suspects

    if wanted is False:
        _skip(f"not computed; run: imgcls data suspects {run}")
    if wanted is None and not _suspects_are_cheap(run):
        _skip(f"not computed automatically (needs fresh backbone features); run: imgcls report {run} --suspects")
    found = find_suspects(run)
    tiles = [
        Tile(
            _photo_uri(s.path),
            [
                ("name", f"{s.path.name} ({s.split})"),
                ("", f"filed as: {s.given_label}"),
                (
                    "bad" if s.predicted_label != s.given_label else "",
                    f"model: {s.predicted_label} {s.predicted_probability:.1%}",
                ),
            ],
            display_path(s.path),
        )
        for s in found.suspects[:SHOWN_SUSPECTS]
    ]
    return {"report": found, "tiles": tiles, "rows": found.suspects[:SUSPECT_ROWS]}


def _suspects_are_cheap(run: Path) -> bool:
    """A transfer run with a frozen backbone: training cached the features of every image."""
    from imgcls.runs import read_config

    recipe = read_config(run).get("recipe", {}) if (run / "config.yaml").is_file() else {}
    return recipe.get("model") == "transfer" and not recipe.get("fine_tune")


def _check(run: Path) -> dict:
    from imgcls.data.check import check_dataset
    from imgcls.runs import read_config

    config = read_config(run) if (run / "config.yaml").is_file() else {}
    root = Path(config.get("data", {}).get("root") or _json(run / "split.json").get("root") or "")
    if not root.is_dir():
        _skip(f"data folder {display_path(root)} not found")
    recipe, options = config.get("recipe", {}), config.get("options", {})
    report = check_dataset(
        root, val_split=recipe.get("val_split", 0.2), seed=options.get("seed", 0), near_limit=NEAR_DUPLICATE_LIMIT
    )
    leaks = [d for d in report["exact_duplicates"] if d.get("cross_split")]
    conflicts = [d for d in report["exact_duplicates"] if d.get("label_conflict")]
    return {"report": report, "leaks": leaks, "conflicts": conflicts}


# --------------------------------------------------------------------------- pictures


def _file_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _photo_uri(path: Path) -> str:
    from imgcls.visual.audit import thumbnail

    return _array_uri(thumbnail(path, TILE_PIXELS))


def _array_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ImgclsError(f"{path}: not valid JSON ({error})") from None


# --------------------------------------------------------------------------- page


def _template():
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["pct"] = lambda value: f"{value:.1%}"
    environment.filters["num"] = lambda value: f"{value:.3f}"
    environment.filters["thousands"] = lambda value: f"{value:,}"
    return environment.from_string(TEMPLATE)


TEMPLATE = """{% macro gallery(tiles) %}
<div class="gallery">
{% for tile in tiles %}
  <div class="tile"><img src="{{ tile.image }}" alt="{{ tile.title }}" title="{{ tile.title }}">
    <div class="caption">{% for kind, text in tile.lines %}<div class="{{ kind }}">{{ text }}</div>{% endfor %}</div>
  </div>
{% endfor %}
</div>
{% endmacro %}
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ run }}: imgcls report</title>
<style>
:root { --fg: #1c2230; --muted: #5d6678; --line: #e2e5eb; --bg: #f4f5f8; --card: #fff;
        --accent: #2457c5; --bad: #b3261e; --good: #1e7b34; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 16px; }
header { background: #1c2230; color: #fff; padding: 22px 0 14px; }
header h1 { margin: 0 0 4px; font-size: 24px; overflow-wrap: anywhere; }
header .meta { color: #c5cbd8; font-size: 14px; overflow-wrap: anywhere; }
nav { margin-top: 12px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
nav a { color: #9fc0ff; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 16px 20px 20px; margin: 18px 0; }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
p.lead, .note { color: var(--muted); margin: 0 0 12px; }
.note { font-style: italic; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.kpi { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.kpi .label { color: var(--muted); font-size: 13px; }
.kpi .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .sub { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; align-items: start; }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.wide img { max-width: 1000px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(165px, 1fr)); gap: 14px; }
.tile { border: 1px solid var(--line); border-radius: 8px; overflow: hidden; background: #fafbfc; }
.tile img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #eceef2; display: block; }
.tile .caption { padding: 6px 8px 8px; font-size: 13px; line-height: 1.35; }
.tile .caption div { overflow-wrap: anywhere; }
.name { color: var(--muted); font-size: 12px; }
.bad { color: var(--bad); font-weight: 600; }
.good { color: var(--good); font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f7f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { overflow-wrap: anywhere; min-width: 12em; }
ul.problems { margin: 6px 0 0; padding-left: 20px; }
pre { background: #f3f4f7; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow: auto; font-size: 13px; line-height: 1.4; max-height: 70vh; }
details summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 13px; padding: 8px 0 30px; }
@media (max-width: 600px) {
  section { padding: 12px 12px 16px; border-radius: 0; margin: 12px -16px; }
  .gallery { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px; }
  .kpi .value { font-size: 22px; }
  th, td { padding: 5px 6px; }
}
</style>
</head>
<body>
<header><div class="wrap">
  <h1>{{ run }}</h1>
  <div class="meta">{{ architecture }}{% if recipe %} · recipe {{ recipe }}{% endif %}
    {%- if image_size %} · {{ image_size }} px{% endif %} · report of {{ generated }}</div>
  <div class="meta">{{ run_path }}</div>
  <nav>
    <a href="#summary">Summary</a><a href="#curves">Curves</a><a href="#mistakes">Mistakes</a>
    <a href="#grad-cam">Grad-CAM</a><a href="#suspects">Suspects</a><a href="#data">Data</a><a href="#config">Config</a>
  </nav>
</div></header>
<main class="wrap">

<section id="summary">
  <h2>Summary</h2>
  {% if kpis %}
  <div class="kpis">
    {% for label, value, sub in kpis %}
    <div class="kpi"><div class="label">{{ label }}</div><div class="value">{{ value }}</div>
      <div class="sub">{{ sub }}</div></div>
    {% endfor %}
  </div>
  <h3>Per class</h3>
  <div class="scroll"><table>
    <thead><tr><th>class</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th>
      <th class="num">images</th></tr></thead>
    <tbody>
    {% for name, row in per_class.items() %}
      <tr><td>{{ name }}</td><td class="num">{{ row.precision | num }}</td><td class="num">{{ row.recall | num }}</td>
        <td class="num">{{ row.f1 | num }}</td><td class="num">{{ row.support }}</td></tr>
    {% endfor %}
    </tbody>
  </table></div>
  {% else %}
  <p class="note">No metrics.json in this run (training did not finish?).</p>
  {% endif %}
  <div class="figures" style="margin-top: 16px">
    {% if figures.confusion_matrix %}
    <figure><img src="{{ figures.confusion_matrix }}" alt="Confusion matrix">
      <figcaption>Rows: true class; columns: predicted class.</figcaption></figure>
    {% endif %}
    {% if roc.data %}
    <figure><img src="{{ roc.data.image }}" alt="ROC curve">
      <figcaption>ROC on the {{ metrics.split or "held-out" }} split.</figcaption></figure>
    {% elif roc.note %}<p class="note">ROC: {{ roc.note }}</p>{% endif %}
  </div>
</section>

<section id="curves">
  <h2>Training curves</h2>
  {% if figures.curves %}
  <figure class="wide"><img src="{{ figures.curves }}" alt="Training and validation accuracy and loss per epoch">
  </figure>
  {% else %}<p class="note">No curves.png in this run.</p>{% endif %}
</section>

<section id="mistakes">
  <h2>Most confident mistakes</h2>
  {% if mistakes.data %}
  <p class="lead">{{ mistakes.data.wrong | thousands }} of {{ mistakes.data.total | thousands }} images of the
    {{ mistakes.data.described }}
    are predicted wrongly{% if mistakes.data.tiles %}; the {{ mistakes.data.tiles | length }} with the highest loss
    (lowest probability of the true class) first{% endif %}.</p>
  {% if mistakes.data.tiles %}{{ gallery(mistakes.data.tiles) }}{% else %}<p class="note">No mistakes.</p>{% endif %}
  {% else %}<p class="note">{{ mistakes.note }}</p>{% endif %}
</section>

<section id="grad-cam">
  <h2>Grad-CAM: where the model looks</h2>
  {% if grad_cam.data %}
  <p class="lead">Red areas raised the score of the predicted class most (layer {{ grad_cam.data.layer }}).
    The worst mistakes first, then the most confident correct image of each class.</p>
  {{ gallery(grad_cam.data.tiles) }}
  {% else %}<p class="note">{{ grad_cam.note }}</p>{% endif %}
</section>

<section id="suspects">
  <h2>Likely mislabelled images</h2>
  {% if suspects.data %}
  {% set found = suspects.data.report %}
  <p class="lead">Every image ({{ found.data }}) was judged by a linear head that never saw it: fitted on the
    other {{ found.folds - 1 }} of {{ found.folds }} folds, on features of {{ found.features }}.
    Score = 1 − the probability of the class its folder gives it. The heads disagree with
    {{ found.disagreements | thousands }} label(s) ({{ (1 - found.agreement) | pct }}); the most suspicious first.</p>
  {{ gallery(suspects.data.tiles) }}
  <h3>Ranking</h3>
  <div class="scroll"><table>
    <thead><tr><th class="num">#</th><th>file</th><th>split</th><th>filed as</th><th>model says</th>
      <th class="num">score</th></tr></thead>
    <tbody>
    {% for s in suspects.data.rows %}
      <tr><td class="num">{{ loop.index }}</td><td class="path">{{ s.path.name }}</td><td>{{ s.split }}</td>
        <td>{{ s.given_label }}</td>
        <td{% if s.predicted_label != s.given_label %} class="bad"{% endif %}>{{ s.predicted_label }}
          {{ s.predicted_probability | pct }}</td>
        <td class="num">{{ "%.3f" | format(s.score) }}</td></tr>
    {% endfor %}
    </tbody>
  </table></div>
  {% else %}<p class="note">{{ suspects.note }}</p>{% endif %}
</section>

<section id="data">
  <h2>Data</h2>
  {% if data_root %}<p class="lead">{{ data_root }}</p>{% endif %}
  {% if counts.rows %}
  <div class="scroll"><table>
    <thead><tr><th>class</th>{% for split in counts.splits %}<th class="num">{{ split }}</th>{% endfor %}
      <th class="num">total</th></tr></thead>
    <tbody>
    {% for name, row in counts.rows %}
      <tr><td>{{ name }}</td>{% for n in row %}<td class="num">{{ n | thousands }}</td>{% endfor %}
        <td class="num">{{ row | sum | thousands }}</td></tr>
    {% endfor %}
      <tr><th>all</th>{% for n in counts.totals %}<th class="num">{{ n | thousands }}</th>{% endfor %}
        <th class="num">{{ counts.totals | sum | thousands }}</th></tr>
    </tbody>
  </table></div>
  {% endif %}
  <h3>Skipped files</h3>
  {% if skipped %}
  <div class="scroll"><table>
    <thead><tr><th>file</th><th>reason</th></tr></thead>
    <tbody>{% for path, reason in skipped %}<tr><td class="path">{{ path }}</td><td>{{ reason }}</td></tr>{% endfor %}
    </tbody>
  </table></div>
  {% else %}<p class="note">None: every image could be read.</p>{% endif %}
  <h3>Duplicates and leakage</h3>
  {% if check.data %}
  {% set report = check.data.report %}
  <p class="lead">{{ report.n_images | thousands }} files read in {{ report.seconds }} s by
    <code>imgcls data check</code>:
    {{ report.exact_duplicates | length }} group(s) of exact duplicates,
    {{ check.data.leaks | length }} across splits (leakage), {{ check.data.conflicts | length }} under two classes,
    {{ report.near_duplicates_total }} near-duplicate pair(s).</p>
  {% if report.problems %}
  <ul class="problems">{% for problem in report.problems %}
    <li{% if problem in report.errors %} class="bad"{% endif %}>{{ problem }}</li>{% endfor %}</ul>
  {% endif %}
  {% set pairs = report.exact_duplicates + report.near_duplicates %}
  {% if pairs %}
  <div class="scroll"><table>
    <thead><tr><th>files (split, class)</th><th>kind</th></tr></thead>
    <tbody>{% for group in pairs[:30] %}<tr><td class="path">
      {% for f in group.files %}<div>{{ f.path }} ({{ f.split }}, {{ f["class"] }})</div>{% endfor %}</td>
      <td>{% if group.distance is defined %}near, distance {{ group.distance }}{% else %}identical{% endif %}
        {%- if group.cross_split %}, <span class="bad">across splits</span>{% endif %}
        {%- if group.label_conflict %}, <span class="bad">two classes</span>{% endif %}</td></tr>{% endfor %}
    </tbody>
  </table></div>
  {% endif %}
  {% else %}<p class="note">{{ check.note }}</p>{% endif %}
</section>

<section id="config">
  <h2>Configuration</h2>
  {% if config_text %}
  <details><summary>config.yaml (every effective setting)</summary><pre>{{ config_text }}</pre></details>
  {% else %}<p class="note">No config.yaml in this run.</p>{% endif %}
</section>
</main>
<footer class="wrap">Made by imgcls: <code>imgcls report {{ run_path }}</code></footer>
</body>
</html>
"""
