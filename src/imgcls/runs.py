"""The run folder contract: `runs/<name>/` is created once, never overwritten, and read back here.

Layout: config.yaml (every effective setting), split.json (exact files per split),
classes.json, model.safetensors + model.json, history.csv, metrics.json, curves.png,
confusion_matrix.png, skipped_files.txt, checkpoints/{best,last}.ckpt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from imgcls.data.decode import display_path
from imgcls.errors import ImgclsError

RUN_DIR_ENV = "IMGCLS_RUN_DIR"  # lets DDP worker processes join the run folder rank 0 created


def create_run_dir(out: Path, name: str) -> Path:
    """`out/name`, or `out/name-2`, `-3`... : an existing run is never touched."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)
    run = fresh_dir(Path(out), name)
    os.environ[RUN_DIR_ENV] = str(run)
    return run


def fresh_dir(parent: Path, name: str) -> Path:
    """A new folder `parent/name` (or `name-2`, `-3`...), created now, so nothing existing is reused."""
    parent.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        candidate = parent / (name if index == 1 else f"{name}-{index}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ImgclsError(f"{parent}: too many folders named {name}")


def resolve_run(run: Path | str) -> Path:
    path = Path(run)
    if not path.is_dir():
        raise ImgclsError(f"{path}: no such run folder")
    if not (path / "config.yaml").is_file() and not (path / "model.json").is_file():
        raise ImgclsError(f"{path}: not an imgcls run folder (no config.yaml or model.json)")
    return path


def write_config(run: Path, config: dict[str, Any]) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=False))


def read_config(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text())


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2))


def write_skipped(run: Path, skipped: list) -> None:
    lines = [f"{display_path(e.path)}\t{e.reason}" for e in skipped]
    (run / "skipped_files.txt").write_text("".join(f"{line}\n" for line in lines))


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples to lists, paths to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return display_path(value)
    return value
