"""The exceptions the package raises on bad input.

Each message names the file, key or value at fault and what was expected, so that a user
reading a Snakemake log knows what to fix without opening the code.
"""


class PipelineError(Exception):
    """Base of every error the package raises on purpose."""


class ConfigError(PipelineError, ValueError):
    """A configuration key or value is wrong."""


class IdxFormatError(PipelineError, ValueError):
    """A file is not valid IDX, or its content does not fit the dataset."""


class DownloadError(PipelineError, OSError):
    """A dataset file could not be fetched from any source."""


class ChecksumError(PipelineError, ValueError):
    """A file's content does not match its known checksum."""


class TableSchemaError(PipelineError, ValueError):
    """A Parquet split does not have the schema this package writes."""


class ModelFormatError(PipelineError, ValueError):
    """A file is not a model this package wrote, or is from a newer format version."""


class TrainingDivergedError(PipelineError, FloatingPointError):
    """The loss became NaN or infinite during training."""


class ImageInputError(PipelineError, ValueError):
    """An input file is not an image or array we can classify."""


class RunInProgressError(PipelineError, RuntimeError):
    """Another workflow run is working in the same directory."""
