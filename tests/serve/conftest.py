"""One tiny real model for every serve test: EfficientNet-Lite0 features + a head trained on 16 cats
and 16 dogs at 160 px (seconds; 76 of the first 80 val photos right), and held-out photos to send it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import imgcls

RUN_DIR_ENV = "IMGCLS_RUN_DIR"


@pytest.fixture(scope="session")
def served_run(cats_dogs_tree, tmp_path_factory) -> Path:
    """A finished `transfer` run (model.onnx included); the environment is restored afterwards."""
    data = cats_dogs_tree(tmp_path_factory.mktemp("serve-data") / "cats-dogs", train=16, val=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: spinning OpenMP threads make small forwards crawl
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("IMGCLS_CACHE", str(tmp_path_factory.mktemp("serve-cache")))
            patch.setenv(RUN_DIR_ENV, "")  # so that the undo removes what training sets
            patch.delenv(RUN_DIR_ENV)
            return imgcls.train(
                data,
                "transfer",
                epochs=10,
                image_size=160,
                batch_size=8,
                progress=False,
                out=tmp_path_factory.mktemp("serve-runs"),
            )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def photos(cats_vs_dogs_dir) -> dict[str, list[Path]]:
    """Held-out photos per class (from val/, which the run above never trains on)."""
    return {name: sorted((cats_vs_dogs_dir / "val" / name).glob("*.jpg"))[10:16] for name in ("cat", "dog")}
