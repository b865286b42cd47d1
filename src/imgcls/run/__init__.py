"""The run folder contract: `Run` (create, open, typed reads), `TrainOptions`, the history format."""

from imgcls.run.folder import HeldOut, Run
from imgcls.run.history import HISTORY_COLUMNS, read_history, write_history
from imgcls.run.options import TrainOptions, parse_duration

__all__ = ["HeldOut", "Run", "TrainOptions", "parse_duration", "HISTORY_COLUMNS", "read_history", "write_history"]
