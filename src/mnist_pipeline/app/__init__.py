"""The browser app (Streamlit, the `[app]` extra): try trained models, browse mistakes, compare
runs, and train new experiments through the workflow.

Launch with `mnist-pipeline app --results results`. The logic is tested without Streamlit:
`data` reads results/, `train_form` derives the Train page's fields from the settings'
description, `workflow` finds the workflow and keeps experiments.yaml, `runs` and `runner`
start, follow and stop Snakemake. `streamlit_app` and `train_page` lay the pages out, kept thin.
"""

