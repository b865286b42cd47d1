"""The `imgcls` command: typer commands grouped by verb, which call the layers below and hold no logic.

train.py    train, recipes, models, summary
tune.py     tune
inspect.py  evaluate, mistakes, report, explain
data.py     data check, data split, data suspects
show.py     show samples, show augment, show activations
ship.py     predict, export, serve
render.py   every table and message they print
"""

from __future__ import annotations

import importlib
import sys
import time

from imgcls.cli.app import app
from imgcls.cli.render import err_console
from imgcls.errors import ImgclsError
from imgcls.files import describe_os_error

# `--budget` counts the whole command from here: typer and rich are loaded (0.1 s), torch is not yet
STARTED = time.perf_counter()

COMMAND_MODULES = ("train", "tune", "inspect", "ship", "data", "show")  # each adds its commands to `app`; --help order
for _module in COMMAND_MODULES:
    importlib.import_module(f"imgcls.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user-facing errors become one red message and exit code 2, never a traceback."""
    from imgcls.progress import console_logging

    console_logging()
    try:
        app()
    except ImgclsError as error:
        # soft_wrap: no hard line breaks inside paths and commands the user copies from the message
        err_console.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as error:  # a file that could not be read or written: which, and why
        err_console.print(f"[bold red]error:[/bold red] {describe_os_error(error)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
