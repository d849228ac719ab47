"""The NumPy network: layers, losses, optimisers, schedules, the model file and the trainer.

    from mnist_pipeline.nn import TrainSettings, fit
    result = fit(TrainSettings(hidden=[64], epochs=1), x_train, y_train, x_val, y_val)

One idea per module: `settings` (TrainSettings: every training key, its default, allowed
values and help, and the rules between keys), `layers` (dense, dropout, batch norm, reshape),
`activations`, `conv` (convolution, max pooling), `losses`, `init`, `optim`, `schedules`,
`parallel` (the worker threads and the fixed blocks they share), `augment` (shifts, flips and
erasing of a training batch), `model` (architecture, Model, save_model/load_model),
`modelfile` (the model file: writing it, and checking it whole before anything is built),
`train` (fit); and for reading and testing, `reference` (the textbook maths of every layer,
the loss and the optimisers, which the tests hold the fast forms to) and `gradcheck`.

Who writes which array: a layer, the loss and an optimiser step leave the arrays they are given
as they were (only `w` of a step, and an `out=` the caller passes, are written) and return
arrays no later call changes. Inside a Model the layers are chained (Layer.chained): results
in reused buffers, activations and dropout in place, which the Model allows only on arrays of
its own; Model.forward returns new logits and never writes x or dlogits.
"""

from mnist_pipeline.nn.settings import TrainSettings
from mnist_pipeline.nn.train import TrainResult, fit

__all__ = ["TrainResult", "TrainSettings", "fit"]
