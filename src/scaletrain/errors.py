"""The project's error types. The CLI prints them as one line and exits with code 2."""


class ScaletrainError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ConfigError(ScaletrainError):
    """A configuration key, value or layout is invalid."""


class DataError(ScaletrainError):
    """An input data file is missing, unreadable or has the wrong layout or values."""


class CheckpointError(ScaletrainError):
    """A checkpoint is missing, corrupt, unsafe or belongs to another model."""


class RunDirError(ScaletrainError):
    """A run or output directory cannot be used (exists, unwritable, ...)."""


class LayoutError(ConfigError):
    """The process layout does not match the MPI world.

    Found alike by every rank (it follows from the config and the number of processes alone),
    so a distributed job ends on it without an abort."""


class TrainingError(ScaletrainError):
    """Training cannot go on (non-finite loss with on_nonfinite: stop, lost rank, ...)."""
