"""Where the front-ends (the `mnist-pipeline` command and the app) find the workflow's results directory."""

# `--results DIR` wins; else this variable (the app's tests set it, as AppTest cannot pass arguments); else ./results.
RESULTS_ENV = "MNIST_PIPELINE_RESULTS"
DEFAULT_RESULTS = "results"
