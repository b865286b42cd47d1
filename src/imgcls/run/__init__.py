"""The run folder contract: `Run` (create, open, typed reads), `TrainOptions`, the history format."""

from imgcls.run.folder import HeldOut, Run
from imgcls.run.history import HISTORY_COLUMNS, read_history, write_history
from imgcls.run.options import TrainOptions

__all__ = ["HeldOut", "Run", "TrainOptions", "HISTORY_COLUMNS", "read_history", "write_history"]
