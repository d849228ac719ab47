"""The run store: every trained model kept under runs/{run}/, named by the id of what made it."""
