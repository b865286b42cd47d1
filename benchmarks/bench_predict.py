"""Prediction benchmark: images/s from JPEG files (decode + resize + model), through the Python API
and through the `imgcls predict` command (start-up included).

    python benchmarks/bench_predict.py RUN              # predicts the shared cats_vs_dogs val photos
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import peak_rss_mib, shared_data, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder")
    parser.add_argument("--images", type=Path, default=None, help="folder of images (default: shared val)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()

    import imgcls
    from imgcls.inference import expand_paths

    folder = args.images or shared_data("cats_vs_dogs") / "val"
    files = expand_paths([folder])
    classifier = imgcls.load(args.run)
    classifier.predict(files[:32])  # warm-up: first-call allocations are not the steady state
    started = time.perf_counter()
    predictions = classifier.predict(files, batch_size=args.batch_size)
    api_seconds = time.perf_counter() - started
    assert all(p.error is None for p in predictions)

    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "imgcls"), "predict", str(args.run), str(folder), "--format", "csv"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cli_seconds = time.perf_counter() - started
    write_result(
        f"predict{args.tag}",
        {
            "run": str(args.run),
            "architecture": classifier.spec.architecture,
            "image_size": classifier.spec.image_size,
            "n_images": len(files),
            "api_images_per_s": round(len(files) / api_seconds, 1),
            "cli_seconds_including_startup": round(cli_seconds, 2),
            "cli_images_per_s_including_startup": round(len(files) / cli_seconds, 1),
            "peak_rss_mib": round(peak_rss_mib(), 0),
        },
    )


if __name__ == "__main__":
    main()
