"""Judging trained models: metrics, corruption robustness, model descriptions, run comparisons and the report."""
