"""mnist_pipeline: IDX data, a NumPy network, metrics and reports for the Snakemake workflow."""

import os as _os
from pathlib import Path as _Path

__version__ = "0.1.0"

# The workflow runs the package of its own checkout and sets this to that checkout's src/
# (workflow/rules/common.smk). Loading any other copy in that run or its jobs (an older
# `pip install .`, another clone's editable install) would compute with code the plan never
# digested, so it is refused here, naming both.
_expected = _os.environ.get("MNIST_PIPELINE_SRC")
if _expected and _Path(__file__).resolve().parent != (_Path(_expected) / "mnist_pipeline").resolve():
    raise ImportError(
        f"this workflow runs the package of its own checkout, {_Path(_expected) / 'mnist_pipeline'}, but Python"
        f" loaded another copy from {_Path(__file__).resolve().parent}; is the checkout's src/ folder missing?"
    )
