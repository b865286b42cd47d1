"""history.csv: one row per epoch and stage, epochs counted from 1 as Keras and the progress bar do."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from imgcls.files import atomic_write_text

HISTORY_COLUMNS = (
    "stage",  # train | head (on cached features) | fine-tune
    "epoch",  # from 1
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",  # the epoch's last learning rate; for a head fitted by L-BFGS (head_fit lbfgs-cv) its L2 strength
    "seconds",
    "train_images_per_s",
)


def read_history(path: Path) -> list[dict]:
    """Rows of history.csv: numbers as floats, `stage` as text."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {k: v if k == "stage" else float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def write_history(path: Path, rows: list[dict]) -> None:
    """The whole file, atomically: a kill while writing leaves the previous epoch's history."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _format(row.get(k)) for k in HISTORY_COLUMNS} for row in rows)
    atomic_write_text(path, buffer.getvalue())


def _format(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e9 else f"{value:.6g}"
