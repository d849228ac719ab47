"""columns.ColumnStep, an MLP's training step by blocks of features: which models it takes; its
forward and backward against the layer-by-layer step (the same maths, to float32 rounding, with
dropout's masks carried over); its dropout masks; the optimiser's step in its weights job; the
same bytes on 1, 2 and 3 workers of helper processes or threads."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn.columns import CHAINED_PRODUCT, _draw_mask, column_cut, column_groups, panel
from mnist_pipeline.nn.layers import Dropout
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.optim import make_optimizer
from mnist_pipeline.nn.parallel import Workers, blocks
from mnist_pipeline.nn.settings import TrainSettings


def model_of(settings: TrainSettings, n_inputs: int = 30, n_classes: int = 5) -> Model:
    model = Model(architecture(settings, n_inputs, n_classes))
    model.initialize(settings.init, np.random.default_rng(0))
    return model


def batch(n: int = 37, n_inputs: int = 30, n_classes: int = 5, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_inputs), dtype=np.float32), rng.integers(0, n_classes, n)


def test_relu_mlps_train_by_columns_and_other_models_layer_by_layer():
    for settings in (TrainSettings(), TrainSettings(hidden=[7], batch_norm=False, dropout=0.0),
                     TrainSettings(hidden=[7, 5, 3], activation="leaky_relu", dropout=0.1)):
        groups = column_groups(model_of(settings).layers)
        assert groups is not None and len(groups) == len(settings.hidden), settings
        assert [group.dense.n_out for group in groups] == list(settings.hidden)
        assert all((group.norm is not None) == settings.batch_norm for group in groups)
        assert all((group.dropout is not None) == (settings.dropout > 0) for group in groups)
    for settings in (TrainSettings(activation="tanh"), TrainSettings(activation="sigmoid"),
                     TrainSettings(model="cnn", conv_channels=[4], hidden=[8])):
        model = model_of(settings, n_inputs=196)
        assert column_groups(model.layers) is None and not model.trains_by_columns
        with pytest.raises(ValueError, match="not an MLP"):
            model.train_by_columns(0)


def test_the_trainer_trains_an_mlp_by_columns_unless_told_not_to():
    from mnist_pipeline.nn.train import Trainer

    with Trainer(TrainSettings(hidden=[8]), 30, 5, 64, threads=1) as trainer:
        assert trainer.model.column_step is not None
    with Trainer(TrainSettings(hidden=[8]), 30, 5, 64, threads=1, by_columns=False) as trainer:
        assert trainer.model.column_step is None


def masks_of(model: Model, n: int) -> list[np.ndarray]:
    """The dropout masks the column step drew in its last forward, as (n, width) arrays."""
    step, masks = model.column_step, []
    for index, group in enumerate(step.groups):
        width = group.dense.n_out
        cut = column_cut(n, group.dense.n_in, width)
        mask = np.empty((n, width), np.float32)
        threshold = round(group.dropout.rate * Dropout.LEVELS)
        for i, c in enumerate(blocks(*cut)):
            block = np.empty((n, c.stop - c.start), np.float32)
            _draw_mask(block, threshold, (step.seed, index, step.steps, i))
            mask[:, c] = block
        masks.append(mask)
    return masks


def layer_by_layer(settings: TrainSettings, x, y, masks: list[np.ndarray] | None):
    """Logits, gradients and batch-norm buffers of one training step made layer by layer,
    dropout multiplying by `masks` (the column step's) instead of drawing its own."""
    model = model_of(settings)
    dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
    for layer, mask in zip(dropouts, masks or [], strict=True):
        def forward(a, train=False, layer=layer, mask=mask):
            layer._train, layer._scratch["mask"] = True, mask
            return a * mask
        layer.forward = forward
    logits = model.forward(x, train=True)
    _, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    return logits, model.flat_grads.copy(), model.flat_buffers.copy()


@pytest.mark.parametrize("settings", [
    TrainSettings(hidden=[16, 8], dropout=0.3),
    TrainSettings(hidden=[16, 8], dropout=0.0),
    TrainSettings(hidden=[12], batch_norm=False, dropout=0.2, activation="leaky_relu"),
    TrainSettings(hidden=[9, 7, 6], batch_norm=True, dropout=0.0, activation="leaky_relu"),
], ids=["bn-dropout", "bn", "leaky-dropout", "three-groups"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_step_by_columns_is_the_layer_by_layer_step(small_blocks, settings, workers):
    x, y = batch()
    model = model_of(settings)
    with Workers(workers, processes=True) as pool:
        model.set_workers(pool)
        model.train_by_columns(seed=5)
        logits = model.forward(x, train=True)
        _, dlogits = softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        masks = masks_of(model, len(x)) if settings.dropout else None
        got = logits, model.flat_grads.copy(), model.flat_buffers.copy()
    expected = layer_by_layer(settings, x, y, masks)
    for name, ours, theirs in zip(("logits", "gradients", "batch-norm buffers"), got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-6, err_msg=name)
    assert np.abs(got[1]).max() > 0.01, "a gradient worth comparing"


def test_dropout_masks_keep_the_rate_differ_by_block_and_step_and_follow_the_key():
    mask = np.empty((128, 256), np.float32)
    threshold = round(0.4 * Dropout.LEVELS)
    _draw_mask(mask, threshold, (7, 0, 1, 0))
    scale = np.float32(Dropout.LEVELS / (Dropout.LEVELS - threshold))
    assert set(np.unique(mask)) == {0, scale}
    assert abs(np.mean(mask == 0) - 0.4) < 0.01
    again = np.empty_like(mask)
    _draw_mask(again, threshold, (7, 0, 1, 0))
    assert again.tobytes() == mask.tobytes(), "the key alone decides the mask"
    for other in ((7, 0, 1, 1), (7, 0, 2, 0), (7, 1, 1, 0), (8, 0, 1, 0)):
        _draw_mask(again, threshold, other)
        assert np.mean(again != mask) > 0.3, other


def trained_bytes(settings: TrainSettings, workers: int, processes: bool, steps: int = 4,
                  shape: tuple[int, int, int] = (37, 30, 5)) -> bytes:
    """The parameters and buffers after `steps` steps by columns on a batch of `shape` (rows,
    inputs, classes)."""
    x, y = batch(*shape)
    model = model_of(settings, *shape[1:])
    optimizer = make_optimizer(settings, model.n_decay)
    with Workers(workers, processes=processes) as pool:
        model.set_workers(pool)
        optimizer.workers = pool
        model.train_by_columns(seed=11)
        for step in range(steps):
            # The same input array twice (the jobs, made once, go to the helpers as unchanged),
            # then other ones; a rate that changes at every step, as a schedule's does.
            xb = x if step < 2 else x * np.float32(1 + step / 10)
            _, dlogits = softmax_cross_entropy(model.forward(xb, train=True), y, 0.1)
            optimizer.begin(model.flat_params, model.flat_grads, 0.01 * (step + 1))
            model.backward(dlogits, optimizer)
    return model.flat_params.tobytes() + model.flat_buffers.tobytes()


@pytest.mark.parametrize("settings", [
    TrainSettings(hidden=[16, 8], dropout=0.3, optimizer="adamw", weight_decay=0.01),
    TrainSettings(hidden=[12], batch_norm=False, dropout=0.0, optimizer="nesterov", activation="leaky_relu"),
], ids=["adamw", "nesterov"])
def test_the_same_bytes_on_one_two_and_three_workers_of_processes_or_threads(small_blocks, settings):
    one = trained_bytes(settings, 1, processes=True)
    for workers in (2, 3):
        assert trained_bytes(settings, workers, processes=True) == one, f"{workers} workers of processes"
        assert trained_bytes(settings, workers, processes=False) == one, f"{workers} threads"


def test_the_sgd_mlp_at_its_own_size_trains_the_same_bytes_on_one_and_two_workers():
    # Its products cut in two at the step's own floor (CHAINED_PRODUCT), not small_blocks'.
    # BLAS on one thread per worker, as the Trainer has it: products this large would otherwise
    # be split by OpenBLAS in the caller by another rule than in a helper.
    settings = TrainSettings(hidden=[256, 128], batch_norm=False, dropout=0.0, optimizer="momentum")
    with threadpool_limits(limits=1, user_api="blas"):
        one = trained_bytes(settings, 1, processes=True, shape=(128, 784, 10))
        assert trained_bytes(settings, 2, processes=True, shape=(128, 784, 10)) == one


@pytest.mark.parametrize("settings", [
    TrainSettings(hidden=[16, 8], dropout=0.3, optimizer="adamw", weight_decay=0.01, label_smoothing=0.1),
    TrainSettings(hidden=[12], batch_norm=False, dropout=0.0, optimizer="nesterov", activation="leaky_relu"),
], ids=["adamw", "nesterov"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_whole_step_in_one_hand_off_is_forward_loss_and_backward_in_turn(small_blocks, settings, workers):
    x, y = batch()
    outcomes = []
    for whole in (True, False):
        model = model_of(settings)
        optimizer = make_optimizer(settings, model.n_decay)
        seen = []
        with Workers(workers, processes=True) as pool:
            model.set_workers(pool)
            optimizer.workers = pool
            model.train_by_columns(seed=5)
            for step in range(3):
                xb = x * np.float32(1 + step / 10)
                optimizer.begin(model.flat_params, model.flat_grads, 0.01 * (step + 1))
                if whole:
                    seen.append(model.train_step(xb, y, settings.label_smoothing, optimizer))
                else:
                    logits = model.forward(xb, train=True)
                    hits = int(np.count_nonzero(logits.argmax(axis=1) == y))
                    loss, dlogits = softmax_cross_entropy(logits, y, settings.label_smoothing)
                    model.backward(dlogits, optimizer)
                    seen.append((loss, hits))
            outcomes.append((seen, model.flat_params.tobytes() + model.flat_buffers.tobytes() + model.flat_grads.tobytes()))
    assert outcomes[0][0] == outcomes[1][0], "the losses and correct counts"
    assert outcomes[0][1] == outcomes[1][1], "the parameters, buffers and gradients"


def test_a_whole_step_needs_the_step_by_columns():
    model = model_of(TrainSettings(hidden=[8]))
    x, y = batch()
    with pytest.raises(ValueError, match="does not train by columns"):
        model.train_step(x, y, 0.0, make_optimizer(TrainSettings(), model.n_decay))


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_the_weights_job_makes_the_optimisers_step_of_the_whole_vector(small_blocks, name):
    settings = TrainSettings(hidden=[16, 8], dropout=0.0, optimizer=name, weight_decay=0.01)
    x, y = batch()
    results = []
    for in_job in (True, False):
        model = model_of(settings)
        optimizer = make_optimizer(settings, model.n_decay)
        with Workers(2, processes=True) as pool:
            model.set_workers(pool)
            optimizer.workers = pool
            model.train_by_columns(seed=3)
            for _ in range(2):
                _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
                if in_job:
                    optimizer.begin(model.flat_params, model.flat_grads, 0.05)
                    model.backward(dlogits, optimizer)
                else:  # the grad_clip order: every gradient, then one step
                    model.backward(dlogits)
                    optimizer.step(model.flat_params, model.flat_grads, 0.05)
            results.append(model.flat_params.tobytes())
    assert results[0] == results[1]


def test_the_step_cuts_the_sgd_mlps_products_in_two_and_the_recipes_as_layer_by_layer():
    # The step's jobs go over in chains, so its blocks need not pay a hand-off each
    # (columns.CHAINED_PRODUCT): the SGD MLP's first layer, one block layer by layer, is two.
    sgd = Model(architecture(TrainSettings(hidden=[256, 128], batch_norm=False, dropout=0.0), 784, 10))
    recipe = Model(architecture(TrainSettings(), 784, 10))
    for model, forward, rows in ((sgd, [2, 1], [4, 1]), (recipe, [4, 2], [4, 4])):
        groups = column_groups(model.layers)
        assert [len(blocks(*column_cut(128, g.dense.n_in, g.dense.n_out))) for g in groups] == forward
        assert [len(g.dense.weight_blocks(128, CHAINED_PRODUCT)) for g in groups] == rows
    # Layer by layer the recipe's products are cut the same way (its dropout masks are drawn by
    # block: the cut is part of its bytes), the SGD MLP's not at all.
    for g in column_groups(recipe.layers):
        assert g.dense.weight_blocks(128, CHAINED_PRODUCT) == g.dense.weight_blocks(128)
    assert [len(g.dense.weight_blocks(128)) for g in column_groups(sgd.layers)] == [1, 1]


def test_panels_hold_each_block_contiguously():
    flat = np.arange(6 * 10, dtype=np.float32)
    seen = np.zeros(flat.size, int)
    for c in blocks(10, 4):
        block = panel(flat, 6, c)
        assert block.shape == (6, c.stop - c.start) and block.flags.c_contiguous
        seen[np.asarray(block, dtype=int).ravel()] += 1
    assert (seen == 1).all()
