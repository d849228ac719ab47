"""mnist_pipeline: IDX data, a NumPy network, metrics and reports for the Snakemake workflow."""

__version__ = "0.1.0"
