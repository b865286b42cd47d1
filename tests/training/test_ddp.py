"""DDP on CPU: two processes (gloo) train one run. Lightning re-executes the command for rank 1,
which joins rank 0's run folder through $IMGCLS_RUN_DIR instead of creating its own."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("imgcls_env")]

IMGCLS = Path(sys.executable).with_name("imgcls")


def test_ddp_two_cpu_processes(cats_dogs_subset, tmp_path: Path, imgcls_env: dict[str, str]) -> None:
    data = cats_dogs_subset("data", train=8, val=4)
    out = tmp_path / "runs"
    command = [str(IMGCLS), "train", str(data), "--recipe", "seed-basic-cnn", "--image-size", "32"]
    command += ["--epochs", "1", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]
    command += ["--batch-size", "4", "--out", str(out), "--no-progress"]
    env = {**imgcls_env, "OMP_NUM_THREADS": "1"}  # two ranks on two cores
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"DDP training hung:\n{error.stdout}\n{error.stderr}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    assert "GLOBAL_RANK: 1" in output  # really two processes
    assert output.count("Finished.") == 1, output  # reported once, by rank 0

    runs = sorted(p.name for p in out.iterdir())
    assert runs == ["seed-basic-cnn"], runs
    run = out / "seed-basic-cnn"
    for name in ("config.yaml", "split.json", "model.safetensors", "model.json", "metrics.json"):
        assert (run / name).is_file(), name
    with (run / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1"]
    assert float(rows[0]["loss"]) > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 8
    assert json.loads((run / "model.json").read_text())["classes"] == ["cat", "dog"]
