"""The Snakemake workflow's own support: the config, the code each stage runs, the run plan, the working-directory lock, logs and what the terminal shows."""
