"""Grad-CAM benchmark: seconds per photo for `Classifier.explain` (decode + forward + backward +
heatmap + overlay) and for drawing its PNG, on JPEG files.

    python benchmarks/bench_explain.py RUN [--images FOLDER] [--count 40] [--tag -transfer]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import peak_rss_mib, shared_data, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder")
    parser.add_argument("--images", type=Path, default=None, help="folder of images (default: shared val)")
    parser.add_argument("--count", type=int, default=40, help="photos timed")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()

    import imgcls
    from imgcls.explain import grad_cam_layer
    from imgcls.inference import expand_paths
    from imgcls.visual import grids

    files = expand_paths([args.images or shared_data("cats_vs_dogs") / "val"])[: args.count]
    classifier = imgcls.load(args.run)
    classifier.explain(files[0])  # warm-up: finds the target layer, first-call allocations
    explain_seconds, draw_seconds = [], []
    with tempfile.TemporaryDirectory() as folder:
        for index, file in enumerate(files):
            started = time.perf_counter()
            result = classifier.explain(file)
            explain_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            grids.explanation_panels(
                classifier.pixels(file), result.heatmap, result.overlay, Path(folder) / f"{index}.png", file.name
            )
            draw_seconds.append(time.perf_counter() - started)
    write_result(
        f"explain{args.tag}",
        {
            "run": str(args.run),
            "architecture": classifier.spec.architecture,
            "backbone": classifier.spec.arch_args.get("backbone"),
            "image_size": classifier.spec.image_size,
            "target_layer": grad_cam_layer(classifier),
            "n_images": len(files),
            "explain_median_s": round(statistics.median(explain_seconds), 4),
            "explain_max_s": round(max(explain_seconds), 4),
            "png_median_s": round(statistics.median(draw_seconds), 4),
            "peak_rss_mib": round(peak_rss_mib(), 0),
        },
    )


if __name__ == "__main__":
    main()
