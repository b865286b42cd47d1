"""In a notebook: progress bars that a notebook can draw, and the example notebooks run top to bottom
in a kernel of this venv, showing what they promise.

examples/cats_vs_dogs.ipynb reads its photos from $IMGCLS_EXAMPLE_DATA (here a small subset of the
shared cats-vs-dogs photos) and its training settings from its `parameters` cell, which the test
overrides as papermill would: a cell injected right after it, with a tiny, fast training."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient

from imgcls.progress import in_notebook, progress_bar
from imgcls.training.callbacks import EpochProgressBar, NotebookEpochProgressBar, epoch_progress_bar

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = {"epochs": 2, "image_size": 64, "batch_size": 8, "report": False}  # seconds, not minutes


def ipython(shell: object) -> SimpleNamespace:
    """A stand-in for the IPython package, whose `get_ipython()` returns `shell`."""
    return SimpleNamespace(get_ipython=lambda: shell)


KERNEL_SHELL = SimpleNamespace(config={"IPKernelApp": {"connection_file": "kernel-1.json"}})  # as in ipykernel


def test_a_notebook_kernel_is_told_from_scripts_and_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not in_notebook()  # pytest
    monkeypatch.setitem(sys.modules, "IPython", ipython(None))
    assert not in_notebook()  # IPython imported by a script
    monkeypatch.setitem(sys.modules, "IPython", ipython(SimpleNamespace(config={"TerminalIPythonApp": {}})))
    assert not in_notebook()  # the IPython terminal
    monkeypatch.setitem(sys.modules, "IPython", ipython(KERNEL_SHELL))
    assert in_notebook()


def test_in_a_notebook_the_bars_are_tqdm_lines(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert type(epoch_progress_bar()) is EpochProgressBar  # rich's, in a terminal
    monkeypatch.setitem(sys.modules, "IPython", ipython(KERNEL_SHELL))
    assert type(epoch_progress_bar()) is NotebookEpochProgressBar
    with progress_bar(True, "Decoding 3 photos", 3) as advance:
        advance(2)
        advance(1)
    drawn = capsys.readouterr().err
    assert drawn.startswith("\r") and "Decoding 3 photos: 100%" in drawn and "3/3" in drawn  # redrawn in place
    assert "\x1b[" not in drawn  # no terminal escapes, which a notebook prints as they are


def inject_parameters(notebook: nbformat.NotebookNode, **values: object) -> None:
    """Papermill's convention: a cell setting `values` right after the cell tagged `parameters`."""
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged, "the notebook has no cell tagged 'parameters'"
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def executed(name: str, folder: Path, env: dict[str, str], **parameters: object) -> list[nbformat.NotebookNode]:
    """Every output of examples/NAME run in `folder` (the kernel's working directory) with `env`."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    inject_parameters(notebook, **parameters)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute(env=env)
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_the_examples_are_saved_without_outputs() -> None:
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code), path.name


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_cats_vs_dogs_notebook_runs_top_to_bottom(cats_dogs_subset, imgcls_env, tmp_path: Path) -> None:
    photos = cats_dogs_subset("photos", train=8, val=4)
    env = {**imgcls_env, "IMGCLS_EXAMPLE_DATA": str(photos), "OMP_NUM_THREADS": "1"}  # see conftest's one_thread
    env.pop("MPLBACKEND", None)  # the kernel's own (inline), as in Jupyter
    outputs = executed("cats_vs_dogs.ipynb", tmp_path, env, SETTINGS=TINY)

    assert [output for output in outputs if output.output_type == "error"] == []
    shown = [output.data for output in outputs if "data" in output]
    html = [data["text/html"] for data in shown if "text/html" in data]
    run_cards = [card for card in html if 'class="imgcls-run"' in card]
    assert len(run_cards) == 1 and "cat, dog" in run_cards[0] and ">finished<" in run_cards[0]
    assert any('class="imgcls-check"' in card for card in html)
    assert any('class="imgcls-evaluation"' in card for card in html)
    assert any('class="imgcls-prediction"' in card for card in html)
    assert sum("image/png" in data for data in shown) == 3  # samples, curves, mistakes
    streams = "".join(output.text for output in outputs if output.output_type == "stream")
    assert "Epoch 2/2" in streams  # the training bar, tqdm's in a notebook
    assert 'install "ipywidgets"' not in streams  # rich's live bar warns so in a notebook, then shows nothing
    assert (tmp_path / "runs" / "transfer" / "model.onnx").is_file()
