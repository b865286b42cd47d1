"""Shared bits of the benchmark scripts: where the shared photos are, how results are written."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def shared_data(name: str) -> Path:
    """`$IMGCLS_SHARED_DATA/<name>` (default: ../shared/data next to the repo); exits if absent."""
    root = Path(os.environ.get("IMGCLS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / name
    if not path.is_dir():
        sys.exit(f"{path} not found: set IMGCLS_SHARED_DATA to the folder holding {name}/")
    return path


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
        "machine": machine(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path
