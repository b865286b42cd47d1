"""Atomic writes: all or nothing, with the file mode any other write would have given."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imgcls.files import atomic_path, atomic_write_text, fresh_dir, shown_path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_the_file_gets_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}\n")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644


def test_fresh_dir_and_shown_path(tmp_path: Path) -> None:
    assert fresh_dir(tmp_path, "run").name == "run"
    assert fresh_dir(tmp_path, "run").name == "run-2"
    assert shown_path(tmp_path / "a" / "b.jpg", tmp_path) == os.path.join("a", "b.jpg")
    assert shown_path("/elsewhere/b.jpg", tmp_path) == "/elsewhere/b.jpg"
