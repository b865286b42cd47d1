"""Progress bars on stderr (stdout stays clean for `--json` and CSV), and which process reports.

One helper for downloads, extraction and feature passes: `with progress_bar(True, "Extracting", n)
as advance: advance(k)`; disabled, it costs nothing and prints nothing. In a Jupyter notebook the
bar is tqdm's (`in_notebook`): without ipywidgets, rich's live display there shows a warning and
nothing until it is done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    enabled: bool, title: str, total: int | None, completed: int = 0, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a rich bar with count (or bytes, `unit="bytes"`), rate and time left."""
    if not enabled:
        yield lambda _n: None
        return
    if in_notebook():
        with _notebook_bar(title, total, completed, unit) as advance:
            yield advance
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if unit == "bytes":
        counted = (DownloadColumn(), TransferSpeedColumn())
    elif total is None:  # a stream of unknown length: how many so far, and how fast
        counted = (TextColumn(f"{{task.completed:,.0f}} {unit}"), _rate_column(unit))
    else:
        counted = (MofNCompleteColumn(), _rate_column(unit))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), *counted, TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(title, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _rate_column(unit: str):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.1f} {unit}/s" if task.speed else "")

    return RateColumn()


@contextlib.contextmanager
def _notebook_bar(title: str, total: int | None, completed: int, unit: str) -> Iterator[Callable[[int], None]]:
    """tqdm.auto: the widget bar with ipywidgets, else a text bar that the notebook redraws in place."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "IProgress not found": the text bar is fine
        from tqdm.auto import tqdm

    in_bytes = unit == "bytes"
    shown_unit = "B" if in_bytes else f" {unit}"
    with tqdm(total=total, initial=completed, desc=title, unit=shown_unit, unit_scale=in_bytes, file=sys.stderr) as bar:
        yield bar.update


def in_notebook() -> bool:
    """Inside a Jupyter kernel (ipykernel: JupyterLab, Notebook, VS Code): output goes to a notebook cell,
    which redraws `\\r` lines but is no terminal. Never imports IPython: a kernel has it loaded already."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def is_rank_zero() -> bool:
    """The process that writes and reports: the only one, or rank 0 of a multi-process training."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def console_logging() -> None:
    """Show imgcls's messages (stages, warnings) on stderr, once, unless the caller set up its own."""
    logger = logging.getLogger("imgcls")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a message comes (it may be replaced after set-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Formatter(logging.Formatter):
    """'stage 1: ...' for information, 'WARNING: ...' for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname}: {message}"
