"""The browser app (Streamlit, the `[app]` extra): try trained models, browse mistakes, compare runs.

Launch with `mnist-pipeline app --results results`. `data` holds the logic and is tested
without Streamlit; `streamlit_app` is the page, kept thin.
"""

# The app reads its results directory from `--results` or this variable (AppTest cannot pass arguments).
RESULTS_ENV = "MNIST_PIPELINE_RESULTS"
