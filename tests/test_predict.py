"""Streaming, resumable prediction into CSV, JSON Lines and Parquet, on ONNX Runtime without torch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from imgcls.errors import ImgclsError
from imgcls.predict import ResultFile, iter_files, onnx_predictor, predict_stream, predict_to_file

IMGCLS = Path(sys.executable).with_name("imgcls")
pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def model(tiny_runs):
    found = onnx_predictor(tiny_runs.transfer)
    assert found is not None, "training should have written model.onnx"
    return found


@pytest.fixture(scope="module")
def photos(tiny_runs) -> list[Path]:
    return sorted(iter_files([tiny_runs.data]))


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_rerun_adds_only_what_is_missing(model, photos, tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"out{suffix}"
    first = predict_to_file(model, photos[:10], output, chunk=4)
    second = predict_to_file(model, photos, output, chunk=4)
    assert (first.predicted, second.already_done, second.predicted) == (10, 10, len(photos) - 10)
    rows = rows_of(output)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos)  # each file once
    alone = {p.source: p for p in predict_stream(model, photos)}
    for row in rows:
        assert row["label"] == alone[row["path"]].label
        assert float(row["dog"]) == pytest.approx(alone[row["path"]].probabilities["dog"], abs=1e-6)


def test_a_line_cut_by_a_kill_is_predicted_again(model, photos, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    predict_to_file(model, photos[:6], output, chunk=3)
    data = output.read_bytes()
    output.write_bytes(data[: len(data) - 20])  # the last row cut in the middle
    ResultFile(output, model.classes)
    assert output.read_bytes().endswith(b"\n")
    predict_to_file(model, photos[:6], output)
    assert sorted(r["path"] for r in rows_of(output)) == sorted(str(p) for p in photos[:6])


def test_unreadable_files_get_error_rows_and_other_models_columns_are_refused(model, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not a photo")
    output = tmp_path / "out.jsonl"
    summary = predict_to_file(model, [tmp_path / "notes.jpg", tmp_path / "gone.jpg"], output)
    assert summary.failed == 2
    assert {r["error"] for r in rows_of(output)} == {"not an image (unrecognised format)", "file not found"}
    (tmp_path / "other.csv").write_text("path,label,probability,car,bus,error\n")
    with pytest.raises(ImgclsError, match="columns are not this model's classes"):
        ResultFile(tmp_path / "other.csv", model.classes)


def test_files_from_a_list_and_folders_are_listed_lazily(photos, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in photos[:3]) + "\n")
    files = iter_files([], listing)
    assert next(files) == photos[0]  # a generator: nothing is read before it is asked for
    assert list(files) == photos[1:3]


def test_predicting_with_onnx_imports_no_torch(tiny_runs, photos) -> None:
    code = (
        "import sys; from imgcls.predict import onnx_predictor, predict_stream; "
        f"m = onnx_predictor({str(tiny_runs.transfer)!r}); "
        f"print(next(predict_stream(m, [{str(photos[0])!r}])).label, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() in (["cat", "False"], ["dog", "False"]), result.stderr


def test_killed_half_way_every_file_is_there_exactly_once(tiny_runs, tmp_path: Path, imgcls_env) -> None:
    listing = tmp_path / "list.txt"
    files = sorted(iter_files([tiny_runs.data]))
    listing.write_text("".join(f"{p}\n" for p in files * 25))  # the same photos under many names
    names = tmp_path / "names"
    names.mkdir()
    many = []
    for index, line in enumerate(listing.read_text().splitlines()):
        link = names / f"{index:05d}{Path(line).suffix}"
        link.symlink_to(line)
        many.append(link)
    output = tmp_path / "out.parquet"
    command = [str(IMGCLS), "predict", str(tiny_runs.transfer), str(names), "--output", str(output), "--no-progress"]
    process = subprocess.Popen(command, env=imgcls_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(output.glob("part-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    written = len(rows_of(output))
    assert 0 < written < len(many), "killed too late or too early"
    again = subprocess.run(command, env=imgcls_env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    paths = [r["path"] for r in rows_of(output)]
    assert sorted(paths) == sorted(str(p) for p in many)  # every file exactly once
    assert f"{written:,} were there already" in again.stderr


def test_the_cli_takes_a_list_alone(tiny_runs, photos, tmp_path: Path, imgcls_env) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in photos[:4]))
    output = tmp_path / "out.jsonl"
    command = [str(IMGCLS), "predict", str(tiny_runs.transfer), "--from-list", str(listing), "--output", str(output)]
    result = subprocess.run(command, env=imgcls_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [r["path"] for r in rows_of(output)] == [str(p) for p in photos[:4]]


def test_a_parquet_output_of_another_model_is_refused(model, photos, tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    predict_to_file(model, photos[:2], output)
    with pytest.raises(ImgclsError, match="columns are not this model's classes"):
        ResultFile(output, ["car", "bus"])
