"""The seeds' own Keras code against `imgcls train`, side by side: seconds per epoch and for the whole command.

    python benchmarks/bench_vs_keras.py                            # 3 epochs each, batch 32, shared cats_vs_dogs
    python benchmarks/bench_vs_keras.py --repeat 3 --tag=-r3       # keras, imgcls, keras, imgcls, ...: medians
    python benchmarks/bench_vs_keras.py --imgcls-args=--no-report  # extra arguments of `imgcls train`

Claim checked: on this 2-core CPU the seeds' basic CNN trains faster per epoch with `imgcls train --recipe
seed-basic-cnn` than with the seeds' Keras code, and by less for the whole command. Printed: both sides' epoch
times (epoch 1, and the median of epochs 2..N), whole-command times and val accuracies, and the ratios
keras / imgcls per epoch and for the whole command.

The Keras side is seed 004's code, the network `seed-basic-cnn` reproduces (Conv 16/32/64 + max-pool, Dense 512,
Dense 1 on logits, Adam, binary crossentropy from logits; no seed has the 32/64/128/128 + RMSprop network of
Chollet's book), written to a temporary file and run by the python of its own virtual environment outside the
repository (default ~/.cache/imgcls-bench/keras-venv, created on first use from PyPI's tensorflow-cpu 2.21 and
pillow). Its whole-command time includes importing TensorFlow; "program" is from the first line after the
imports to the end, "fit" the call to model.fit (it goes on for a while after the last epoch). Keras' val
accuracy is the seed's `metrics=['accuracy']`, which thresholds the logit at 0.5, not at 0. The imgcls side is
the whole `imgcls train` command with a fresh, empty IMGCLS_CACHE (a user's first run: epoch 1 decodes every
JPEG); its epoch times are history.csv's `seconds`, its accuracy metrics.json's (the kept epoch) and the last
epoch's. Both sides see every training photo once per epoch and validate on every val photo (steps =
ceil(n / batch)), both epoch times cover training plus validation, and the two never run at the same time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import shared_data, write_result

KERAS_PACKAGES = ["tensorflow-cpu==2.21.*", "pillow"]
RESULT_MARK = "BENCH_RESULT "

# From ../shared/seeds/004_f007d7789847c8ff.txt ("图像分类（二分类）", the TensorFlow tutorial's basic CNN),
# its code cells in order. Changed, and only these: the data path and folder names (the shared set has
# train/val with cat/dog), epochs and batch_size from argv (the seed: 20 and 128), steps rounded up instead of
# down (the seed's `// batch_size` skips the last partial batch: 15 x 128 = 1,920 of the 2,000 photos), `fit`
# for `fit_generator` (gone from Keras 3), the plotting cells left out (no matplotlib), and the timing lines
# (marked `# bench`) added.
SEED_004 = """\
from __future__ import absolute_import, division, print_function, unicode_literals
import time  # bench
_started = time.perf_counter()  # bench
import json, math, sys  # bench

import tensorflow as tf
from tensorflow.keras.models import Sequential
from tensorflow.keras.layers import Dense, Conv2D, Flatten, Dropout, MaxPooling2D
from tensorflow.keras.preprocessing.image import ImageDataGenerator

import os
import numpy as np

_imported = time.perf_counter()  # bench
PATH = sys.argv[1]

train_dir = os.path.join(PATH, 'train')
validation_dir = os.path.join(PATH, 'val')

train_cats_dir = os.path.join(train_dir, 'cat')  # directory with our training cat pictures
train_dogs_dir = os.path.join(train_dir, 'dog')  # directory with our training dog pictures
validation_cats_dir = os.path.join(validation_dir, 'cat')  # directory with our validation cat pictures
validation_dogs_dir = os.path.join(validation_dir, 'dog')  # directory with our validation dog pictures

num_cats_tr = len(os.listdir(train_cats_dir))
num_dogs_tr = len(os.listdir(train_dogs_dir))

num_cats_val = len(os.listdir(validation_cats_dir))
num_dogs_val = len(os.listdir(validation_dogs_dir))

total_train = num_cats_tr + num_dogs_tr
total_val = num_cats_val + num_dogs_val

print('total training cat images:', num_cats_tr)
print('total training dog images:', num_dogs_tr)

print('total validation cat images:', num_cats_val)
print('total validation dog images:', num_dogs_val)
print("--")
print("Total training images:", total_train)
print("Total validation images:", total_val)

batch_size = int(sys.argv[3])
epochs = int(sys.argv[2])
IMG_HEIGHT = 150
IMG_WIDTH = 150

train_image_generator = ImageDataGenerator(rescale=1./255)
validation_image_generator = ImageDataGenerator(rescale=1./255)

train_data_gen = train_image_generator.flow_from_directory(batch_size=batch_size,
                                                           directory=train_dir,
                                                           shuffle=True,
                                                           target_size=(IMG_HEIGHT, IMG_WIDTH),
                                                           class_mode='binary')

val_data_gen = validation_image_generator.flow_from_directory(batch_size=batch_size,
                                                              directory=validation_dir,
                                                              target_size=(IMG_HEIGHT, IMG_WIDTH),
                                                              class_mode='binary')

model = Sequential([
    Conv2D(16, 3, padding='same', activation='relu', input_shape=(IMG_HEIGHT, IMG_WIDTH ,3)),
    MaxPooling2D(),
    Conv2D(32, 3, padding='same', activation='relu'),
    MaxPooling2D(),
    Conv2D(64, 3, padding='same', activation='relu'),
    MaxPooling2D(),
    Flatten(),
    Dense(512, activation='relu'),
    Dense(1)
])

model.compile(optimizer='adam',
              loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
              metrics=['accuracy'])

model.summary()

class EpochTimes(tf.keras.callbacks.Callback):  # bench
    seconds = []  # bench
    def on_epoch_begin(self, epoch, logs=None):  # bench
        self.started = time.perf_counter()  # bench
    def on_epoch_end(self, epoch, logs=None):  # bench: after validation
        self.seconds.append(time.perf_counter() - self.started)  # bench

_fit_started = time.perf_counter()  # bench
history = model.fit(
    train_data_gen,
    steps_per_epoch=math.ceil(total_train / batch_size),
    epochs=epochs,
    validation_data=val_data_gen,
    validation_steps=math.ceil(total_val / batch_size),
    callbacks=[EpochTimes()],  # bench
)

print("BENCH_RESULT " + json.dumps({  # bench
    "epoch_seconds": EpochTimes.seconds,  # bench
    "val_accuracy": history.history["val_accuracy"],  # bench
    "import_seconds": _imported - _started,  # bench
    "program_seconds": time.perf_counter() - _imported,  # bench
    "fit_seconds": time.perf_counter() - _fit_started,  # bench
    "tensorflow": tf.__version__, "keras": __import__("importlib.metadata").metadata.version("keras"),  # bench
}))  # bench
"""


def keras_python(venv: Path) -> Path:
    """The python of the Keras environment, created (python -m venv, pip install) unless it is ready."""
    python, ready = venv / "bin" / "python", venv / "imgcls-bench-packages.txt"
    if ready.is_file() and ready.read_text().split() == KERAS_PACKAGES and python.exists():
        return python
    print(f"creating the Keras environment {venv}: pip install {' '.join(KERAS_PACKAGES)}", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", *KERAS_PACKAGES], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        sys.exit(f"could not create the Keras environment {venv} ({error}); pip needs to reach PyPI")
    ready.write_text("\n".join(KERAS_PACKAGES) + "\n")
    return python


def run_keras(python: Path, data: Path, epochs: int, batch_size: int) -> dict:
    """Seed 004's program in a subprocess; its own figures plus the wall time of the whole subprocess."""
    with tempfile.TemporaryDirectory(prefix="imgcls-bench-keras-") as tmp:
        program = Path(tmp) / "seed_004.py"
        program.write_text(SEED_004)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        child = subprocess.Popen(
            [str(python), str(program), str(data), str(epochs), str(batch_size)],
            cwd=tmp,
            stdout=subprocess.PIPE,
            text=True,
        )
        result = None
        for line in child.stdout:  # echoed as it comes, but for the result line
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
            else:
                print(line, end="", flush=True)
        wall = time.perf_counter() - started
    if child.wait() or result is None:
        sys.exit(f"the Keras program failed (exit {child.returncode})")
    return {"wall_seconds": wall, "load_average_before": load, **result}


def run_imgcls(data: Path, epochs: int, batch_size: int, extra: list[str]) -> dict:
    """The whole `imgcls train` command with an empty image cache; epoch times and accuracies from the run."""
    with tempfile.TemporaryDirectory(prefix="imgcls-bench-vs-keras-") as tmp:
        command = [str(Path(sys.executable).parent / "imgcls"), "train", str(data), "--recipe", "seed-basic-cnn"]
        command += ["--epochs", str(epochs), "--batch-size", str(batch_size), "--out", f"{tmp}/runs"]
        command += ["--name", "vs-keras", *extra]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run(command, env={**os.environ, "IMGCLS_CACHE": f"{tmp}/cache"}, check=True)
        wall = time.perf_counter() - started
        run = Path(tmp) / "runs" / "vs-keras"
        with open(run / "history.csv", newline="") as file:
            history = list(csv.DictReader(file))
        metrics = json.loads((run / "metrics.json").read_text())
    return {
        "wall_seconds": wall,
        "load_average_before": load,
        "epoch_seconds": [float(row["seconds"]) for row in history],
        "val_accuracy": [float(row["val_accuracy"]) for row in history],
        "kept_val_accuracy": metrics["accuracy"],
    }


def summary(runs: list[dict]) -> dict:
    """Medians over the repeats of one side: epoch 1, epochs 2..N, whole command (and the raw runs)."""

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    later = [statistics.median(run["epoch_seconds"][1:]) for run in runs if len(run["epoch_seconds"]) > 1]
    result = {
        "first_epoch_seconds": median([run["epoch_seconds"][0] for run in runs]),
        "later_epoch_seconds_median": median(later),
        "whole_command_seconds": median([run["wall_seconds"] for run in runs]),
        "last_epoch_val_accuracy": median([run["val_accuracy"][-1] for run in runs]),
    }
    for key in ("program_seconds", "import_seconds", "fit_seconds", "kept_val_accuracy"):
        if key in runs[0]:
            result[key] = median([run[key] for run in runs])
    return {**result, "runs": runs}


def ratio(keras: float | None, imgcls: float | None) -> float | None:
    return round(keras / imgcls, 2) if keras and imgcls else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="train/ and val/ with cat/ and dog/ (default: shared)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs, alternating; medians reported")
    parser.add_argument("--keras-venv", type=Path, default=Path.home() / ".cache" / "imgcls-bench" / "keras-venv")
    parser.add_argument("--imgcls-args", default="", help="extra arguments of imgcls train, e.g. --no-report")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()

    data = (args.data or shared_data("cats_vs_dogs")).resolve()
    python = keras_python(args.keras_venv.expanduser())
    keras_runs, imgcls_runs = [], []
    for index in range(args.repeat):
        print(f"--- pair {index + 1}/{args.repeat}: Keras (seed 004)", flush=True)
        keras_runs.append(run_keras(python, data, args.epochs, args.batch_size))
        print(f"--- pair {index + 1}/{args.repeat}: imgcls train", flush=True)
        imgcls_runs.append(run_imgcls(data, args.epochs, args.batch_size, shlex.split(args.imgcls_args)))
    keras, imgcls = summary(keras_runs), summary(imgcls_runs)

    print(f"\n{'':30}{'Keras':>10}{'imgcls':>10}{'ratio':>10}")
    for label, key in [
        ("epoch 1 (s)", "first_epoch_seconds"),
        (f"epochs 2..{args.epochs}, median (s)", "later_epoch_seconds_median"),
        ("whole command (s)", "whole_command_seconds"),
        ("val accuracy, last epoch", "last_epoch_val_accuracy"),
    ]:
        third = ratio(keras[key], imgcls[key]) if "seconds" in key else None
        print(
            f"{label:30}"
            + "".join(f"{'-' if value is None else value:>10}" for value in (keras[key], imgcls[key], third))
        )
    print(
        f"Keras: {keras['import_seconds']} s importing TensorFlow, {keras['program_seconds']} s after the imports, "
        f"{keras['fit_seconds']} s of them in model.fit"
    )
    print(f"imgcls: {imgcls['kept_val_accuracy']} val accuracy in the kept epoch (the recipe monitors val_accuracy)")
    write_result(
        "vs-keras" + args.tag,
        {
            "data": str(data),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "repeat": args.repeat,
            "keras_venv": str(args.keras_venv),
            "tensorflow": keras_runs[0]["tensorflow"],
            "keras_version": keras_runs[0]["keras"],
            "imgcls_args": args.imgcls_args,
            "ratio_per_epoch": ratio(keras["later_epoch_seconds_median"], imgcls["later_epoch_seconds_median"]),
            "ratio_first_epoch": ratio(keras["first_epoch_seconds"], imgcls["first_epoch_seconds"]),
            "ratio_whole_command": ratio(keras["whole_command_seconds"], imgcls["whole_command_seconds"]),
            "keras": keras,
            "imgcls": imgcls,
        },
    )


if __name__ == "__main__":
    main()
