"""report.html of runs whose labels do not come from class folders still shows their data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import imgcls

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"no {name} section"
    return match.group(1)


def test_the_report_of_a_run_labelled_by_file_names_has_its_data_section(
    kaggle_folder, imgcls_env, tmp_path: Path
) -> None:
    run = imgcls.train(
        kaggle_folder,
        "transfer",
        label_from="name",
        epochs=2,
        image_size=64,
        batch_size=8,
        progress=False,
        out=tmp_path / "r",
    )

    assert run.dataset.labels is not None and run.dataset.labels.from_names
    data = section(run.report_path.read_text(encoding="utf-8"), "data")
    assert "not found" not in data and "could not be computed" not in data, data
    assert "<td>cat</td>" in data and "<td>dog</td>" in data, data
    assert "imgcls data check" in data  # the check of exactly the files the run trained on ran
    assert ">24<" in data  # 12 + 12 photos in all (the stray file has no label)
