"""The NumPy network: layers, losses, optimisers, schedules, the model file and the trainer.

One idea per module: `layers` (dense, dropout, batch norm, reshape), `activations`, `conv`
(convolution, max pooling), `losses`, `init`, `optim`, `schedules`, `settings` (checks the
training keys), `parallel` (the worker threads and the fixed blocks they share), `model`
(architecture, Model, save_model/load_model), `train` (fit), and `gradcheck` for the tests.
"""
