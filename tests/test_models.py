"""Model-level tests: ``fastnn.models.Sequential`` end to end.

Construction (list / ``add``), ``compile`` (names and objects), ``fit`` (History, validation
split and data, shuffling, class and sample weights), ``evaluate`` / ``predict`` against
hand computations, ``summary`` with hand-counted parameters, weights, ``save`` /
``load_model`` (optimizer state, atomic writes, truncated and foreign files), the callbacks
inside a real ``fit``, the progress output, ``set_random_seed`` and bad input.

Callback logic on its own (with a fake model) is in test_callbacks.py; here the callbacks
run inside ``Sequential.fit``.
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import stat
import warnings
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import callbacks as cbs
from fastnn import losses, metrics, models, optimizers
from fastnn.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input,
                           MaxPooling2D)
from fastnn.models import Sequential, load_model
from fastnn.utils import set_random_seed
from conftest import (TOLERANCES, absmax, assert_bitwise, assert_close, run_steps_calls,
                      tolerance)

K = 3          # classes
D = 6          # features
SCCE = "sparse_categorical_crossentropy"
# a float32 model's loss against a float64 hand computation (pytest.approx spelling)
APPROX32 = dict(rel=TOLERANCES[np.dtype(np.float32)]["rtol"],
                abs=TOLERANCES[np.dtype(np.float32)]["atol"])


# ----------------------------------------------------------------------------- helpers
def make_data(n=48, seed=0):
    """A learnable 3-class problem: y = argmax(x @ W) for a fixed W."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    w = np.random.default_rng(100).normal(size=(D, K))
    y = np.argmax(x @ w, axis=1).astype(np.int64)
    return x, y


def mlp(seed=0, optimizer="adam", dropout=0.0, batchnorm=False, metrics_=("accuracy",),
        loss=SCCE, kernel_regularizer=None):
    """Dense(8, relu) [-> BatchNorm] [-> Dropout] -> Dense(3, softmax), weights from ``seed``."""
    set_random_seed(seed)
    layers = [Dense(8, activation="relu", input_shape=(D,))]
    if batchnorm:
        layers.append(BatchNormalization())
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(K, activation="softmax", kernel_regularizer=kernel_regularizer))
    model = Sequential(layers)
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics_))
    return model


def assert_same_weights(a, b, what=""):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for i, (p, q) in enumerate(zip(wa, wb)):
        assert_bitwise(p, q, what=f"{what} weight {i}")


def weights_differ(a, b):
    return any(not np.array_equal(p, q) for p, q in zip(a, b))


def hand_forward(weights, x):
    """float64 logits of the 2-layer mlp() (no BatchNorm/Dropout) from its weights."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    h = np.maximum(x.astype(np.float64) @ w1 + b1, 0.0)
    return h @ w2 + b2


def hand_ce(z, y):
    """Per-sample cross-entropy of softmax(z) against integer labels y (float64)."""
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def tmp_leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp") or f.startswith(".fastnn-")]


# ----------------------------------------------------------------------------- construction
def test_list_and_add_build_the_same_model():
    set_random_seed(7)
    a = Sequential([Dense(8, activation="relu", input_shape=(D,)), Dropout(0.5),
                    Dense(K, activation="softmax")])
    set_random_seed(7)
    b = Sequential()
    b.add(Dense(8, activation="relu", input_shape=(D,)))
    b.add(Dropout(0.5))
    b.add(Dense(K, activation="softmax"))
    assert a.built and b.built
    assert [type(l).__name__ for l in a.layers] == [type(l).__name__ for l in b.layers] == \
        ["Dense", "Dropout", "Dense"]
    assert a.output_shape == b.output_shape == (None, K)
    assert_same_weights(a, b, "list vs add")
    x, _ = make_data(10)
    assert_bitwise(a.predict(x), b.predict(x), what="list vs add predictions")


def test_input_layer_first_and_layers_property():
    model = Sequential([Input((D,)), Dense(4)])
    assert model.built and model.input_shape == (None, D)
    assert [type(l).__name__ for l in model.layers] == ["Dense"]  # no InputLayer
    with pytest.raises(ValueError, match="Input can only be the first"):
        model.add(Input((4,)))


def test_add_rejects_non_layers_and_duplicate_names():
    model = Sequential([Dense(4, input_shape=(D,), name="hidden")])
    with pytest.raises(TypeError, match="expects a Layer, received str"):
        model.add("dense")
    with pytest.raises(ValueError, match="'hidden' is already in the model"):
        model.add(Dense(2, name="hidden"))


def test_failed_add_leaves_the_model_unchanged():
    """A layer that cannot be built on the current output is not kept: the model stays
    usable (before the fix the bad layer stayed in the model and every later add failed)."""
    model = Sequential([Dense(4, input_shape=(D,))])
    with pytest.raises(ValueError, match="4-D input"):
        model.add(Conv2D(2, 3))  # a Conv2D after a Dense: 2-D input
    assert [type(l).__name__ for l in model.layers] == ["Dense"]
    model.add(Dense(2))
    assert model.output_shape == (None, 2)
    assert model.predict(np.ones((3, D), np.float32)).shape == (3, 2)


# ----------------------------------------------------------------------------- compile
def test_compile_with_names_and_objects_trains_identically():
    x, y = make_data()
    a = mlp(optimizer="sgd", metrics_=["accuracy"])
    set_random_seed(0)
    b = Sequential([Dense(8, activation="relu", input_shape=(D,)),
                    Dense(K, activation="softmax")])
    b.compile(optimizer=optimizers.SGD(), loss=losses.SparseCategoricalCrossentropy(),
              metrics=[metrics.SparseCategoricalAccuracy()])
    set_random_seed(1)
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0)
    set_random_seed(1)
    hb = b.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert_same_weights(a, b, "names vs objects")
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history["accuracy"] == hb.history["sparse_categorical_accuracy"]
    assert isinstance(a.optimizer, optimizers.SGD)
    assert isinstance(a.loss, losses.SparseCategoricalCrossentropy)


def test_compile_single_metric_string_and_missing_loss():
    x, y = make_data(16)
    model = mlp(metrics_=())
    model.compile("adam", SCCE, metrics="accuracy")  # a bare string, as Keras accepts
    h = model.fit(x, y, verbose=0)
    assert set(h.history) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="compile needs a loss"):
        model.compile("adam")


# ----------------------------------------------------------------------------- fit
def test_fit_returns_history_with_per_epoch_keys():
    x, y = make_data(40)
    model = mlp()
    h = model.fit(x, y, epochs=3, batch_size=8, verbose=0, validation_data=(x[:10], y[:10]))
    assert isinstance(h, cbs.History)
    assert model.history is h
    assert h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in h.history.items():
        assert len(values) == 3, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), key
    assert all(0.0 <= v <= 1.0 for v in h.history["accuracy"] + h.history["val_accuracy"])

    h2 = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert set(h2.history) == {"loss", "accuracy"}
    assert h2.epoch == [0, 1]

    h3 = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    assert h3.epoch == [2, 3]
    assert len(h3.history["loss"]) == 2


def test_fit_logs_the_epoch_mean_of_batch_losses():
    """With a zero learning rate (weights frozen, no dropout) the epoch's logged loss and
    accuracy equal evaluate() on the same data: the mean over samples, partial last batch
    weighted by its size."""
    x, y = make_data(45)
    model = mlp(optimizer=optimizers.SGD(learning_rate=0.0))
    before = model.get_weights()
    h = model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # batches 8 x 5 + 5
    for w0, w1 in zip(before, model.get_weights()):
        assert_bitwise(w1, w0, what="lr=0 leaves weights unchanged")
    loss, acc = model.evaluate(x, y, batch_size=45, verbose=0)
    assert h.history["loss"][0] == pytest.approx(loss, **APPROX32)
    assert h.history["accuracy"][0] == acc


def test_per_class_metrics_reach_history_and_callbacks():
    """A metric whose result is an array (F1Score with average=None: one value per class)
    is in fit's History and in every callback's logs, as Keras 3 has it (it was only in
    the val_ entries): with frozen weights the epoch's array is evaluate()'s."""
    from fastnn.utils import to_categorical
    x, y = make_data(45)
    t = to_categorical(y, K)
    set_random_seed(0)
    model = Sequential([Dense(8, activation="relu", input_shape=(D,)),
                        Dense(K, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="categorical_crossentropy",
                  metrics=[metrics.F1Score()])
    seen = {}

    class Record(cbs.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["batch"] = logs["f1_score"]

        def on_test_batch_end(self, batch, logs=None):
            seen["test_batch"] = logs["f1_score"]

        def on_test_end(self, logs=None):
            seen["test_end"] = logs["f1_score"]

    h = model.fit(x, t, epochs=2, batch_size=8, validation_data=(x, t), verbose=0,
                  callbacks=[Record()])
    expected = model.evaluate(x, t, batch_size=45, verbose=0, return_dict=True)["f1_score"]
    assert expected.shape == (K,)
    assert set(h.history) == {"loss", "f1_score", "val_loss", "val_f1_score"}
    for key in ("f1_score", "val_f1_score"):
        assert len(h.history[key]) == 2
        for got in h.history[key]:
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=key)
    for where in ("batch", "test_batch", "test_end"):
        np.testing.assert_allclose(seen[where], expected, rtol=1e-6, err_msg=where)


def test_validation_split_takes_the_last_fraction_before_shuffling():
    """Keras semantics: validation_split=f trains on the first floor(N*(1-f)) samples and
    holds out the rest (and their sample weights) before shuffling; identical to passing
    them as validation_data."""
    x, y = make_data(40)
    sw = np.linspace(0.5, 2.0, 40)
    a = mlp(seed=3)
    set_random_seed(11)
    ha = a.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, sample_weight=sw,
               shuffle=True, verbose=0)
    b = mlp(seed=3)
    set_random_seed(11)
    hb = b.fit(x[:30], y[:30], epochs=3, batch_size=8, sample_weight=sw[:30],
               validation_data=(x[30:], y[30:], sw[30:]), shuffle=True, verbose=0)
    assert ha.history == hb.history
    assert_same_weights(a, b, "validation_split vs validation_data")
    # and it is not the first fraction
    c = mlp(seed=3)
    set_random_seed(11)
    hc = c.fit(x[10:], y[10:], epochs=3, batch_size=8, sample_weight=sw[10:],
               validation_data=(x[:10], y[:10], sw[:10]), shuffle=True, verbose=0)
    assert hc.history["val_loss"] != ha.history["val_loss"]


@pytest.mark.parametrize("n,split,n_train", [(10, 0.25, 7), (10, 0.5, 5), (7, 0.3, 4),
                                             (3, 0.5, 1), (100, 0.15, 85)])
def test_validation_split_sizes_are_keras(n, split, n_train):
    """Keras's train_validation_split: split_at = floor(N * (1 - split)) samples train
    (10 and 0.25 give 7 + 3; holding out floor(N * split) gave 8 + 2)."""
    seen = {}

    class Sizes(cbs.Callback):
        def on_train_begin(self, logs=None):
            seen["steps"] = self.params["steps"]

        def on_test_batch_end(self, batch, logs=None):
            seen["val_batches"] = batch + 1

    x, y = make_data(n)
    mlp().fit(x, y, batch_size=1, epochs=1, verbose=0, validation_split=split,
              callbacks=[Sizes()])
    assert seen == {"steps": n_train, "val_batches": n - n_train}


def test_validation_data_overrides_validation_split():
    """As in Keras: with both given, validation_data is used and no data is held out."""
    x, y = make_data(40)
    xv, yv = make_data(12, seed=5)
    a, b = mlp(seed=3), mlp(seed=3)
    set_random_seed(2)
    ha = a.fit(x, y, epochs=2, batch_size=8, validation_split=0.5, validation_data=(xv, yv),
               verbose=0)
    set_random_seed(2)
    hb = b.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv), verbose=0)
    assert ha.history == hb.history
    assert_same_weights(a, b, "validation_data overrides validation_split")


def test_batch_size_none_means_32():
    x, y = make_data(70)
    model = mlp()
    steps = {}

    class Steps(cbs.Callback):
        def on_train_begin(self, logs=None):
            steps["fit"] = self.params["steps"]

    model.fit(x, y, batch_size=None, epochs=1, verbose=0, callbacks=[Steps()])
    assert steps["fit"] == 3
    rec = _Recorder()
    model.evaluate(x, y, batch_size=None, verbose=0, callbacks=[rec])
    model.predict(x, batch_size=None, callbacks=[rec])
    names = [c[0] for c in rec.calls]
    assert names.count("on_test_batch_end") == 3 and names.count("on_predict_batch_end") == 3


class _Recorder(cbs.Callback):
    """Records every hook call as (name, batch or None, sorted log keys)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def hook(*args):
                batch = args[0] if args and isinstance(args[0], int) else None
                logs = args[-1] if args and isinstance(args[-1], dict) else None
                self.calls.append((name, batch, sorted(logs) if logs else None))
            return hook
        return super().__getattribute__(name)


def test_evaluate_and_predict_call_the_test_and_predict_hooks():
    """Keras: evaluate calls on_test_begin, on_test_batch_begin/_end (with the running
    loss and metrics) and on_test_end (the final ones); predict the on_predict_* hooks,
    on_predict_batch_end with {"outputs": the batch's outputs}."""
    x, y = make_data(20)
    model = mlp()
    rec = _Recorder()
    res = model.evaluate(x, y, batch_size=8, verbose=0, callbacks=[rec], return_dict=True)
    keys = sorted(res)
    assert rec.calls == [("on_test_begin", None, None)] + [
        c for b in range(3) for c in (("on_test_batch_begin", b, None),
                                      ("on_test_batch_end", b, keys))] + [
        ("on_test_end", None, keys)]
    outs = []

    class Outs(cbs.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            outs.append(logs["outputs"].copy())

    rec = _Recorder()
    pred = model.predict(x, batch_size=8, callbacks=[rec, Outs()])
    assert [c[:2] for c in rec.calls] == [("on_predict_begin", None)] + [
        c for b in range(3) for c in (("on_predict_batch_begin", b),
                                      ("on_predict_batch_end", b))] + [("on_predict_end", None)]
    np.testing.assert_array_equal(np.concatenate(outs), pred)


def test_stop_evaluating_and_stop_predicting():
    x, y = make_data(20)
    model = mlp()

    class Stop(cbs.Callback):
        def on_test_batch_end(self, batch, logs=None):
            self.model.stop_evaluating = True

        def on_predict_batch_end(self, batch, logs=None):
            self.model.stop_predicting = True

    first = model.evaluate(x[:8], y[:8], verbose=0, return_dict=True)
    assert model.evaluate(x, y, batch_size=8, verbose=0, callbacks=[Stop()],
                          return_dict=True) == first
    assert model.predict(x, batch_size=8, callbacks=[Stop()]).shape == (8, K)


def test_fit_validation_runs_the_test_hooks_and_after_a_stop_within_the_epoch():
    """As Keras: fit's callbacks see the validation run (on_test_* inside each epoch, after
    the training batches), and validation still runs when a callback stops training in
    the middle of an epoch."""
    x, y = make_data(32)
    xv, yv = make_data(10, seed=5)
    rec = _Recorder()

    class StopAtBatch1(cbs.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    h = mlp().fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=(xv, yv),
                  callbacks=[rec, StopAtBatch1()])
    names = [c[0] for c in rec.calls]
    assert names.count("on_epoch_end") == 1 and names.count("on_test_begin") == 1
    i = names.index("on_test_begin")
    assert names[i - 1] == "on_train_batch_end" and rec.calls[i - 1][1] == 1
    assert names[i + 1:i + 5] == ["on_test_batch_begin", "on_test_batch_end"] * 2
    assert names[i + 5] == "on_test_end" and names[i + 6] == "on_epoch_end"
    assert "val_loss" in h.history and len(h.history["val_loss"]) == 1


def test_validation_data_values_equal_evaluate():
    x, y = make_data(40)
    xv, yv = make_data(12, seed=5)
    model = mlp()
    h = model.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_data=(xv, yv))
    loss, acc = model.evaluate(xv, yv, batch_size=8, verbose=0)
    assert h.history["val_loss"][0] == loss
    assert h.history["val_accuracy"][0] == acc


def test_shuffle_false_is_deterministic_and_in_order(backend):
    """shuffle=False feeds the batches in order: fit == a loop of train_on_batch over
    consecutive slices, whatever the state of the global generator."""
    x, y = make_data(44)
    a = mlp(seed=2, optimizer="adam")
    set_random_seed(123)
    a.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    b = mlp(seed=2, optimizer="adam")
    set_random_seed(456)  # a different generator state must not matter
    b.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert_same_weights(a, b, "shuffle=False twice")
    c = mlp(seed=2, optimizer="adam")
    for _ in range(2):
        for i in range(0, len(x), 8):
            c.train_on_batch(x[i:i + 8], y[i:i + 8])
    assert_same_weights(a, c, "shuffle=False vs train_on_batch loop")
    # with shuffling, the order (hence the result) changes
    d = mlp(seed=2, optimizer="adam")
    set_random_seed(123)
    d.fit(x, y, epochs=2, batch_size=8, shuffle=True, verbose=0)
    assert weights_differ(a.get_weights(), d.get_weights())


def test_sample_weight_zero_equals_dropping_the_samples(backend):
    """Loss reduction is sum(w_i * l_i) / batch_size, so weights 0 on m samples and N/(N-m)
    on the rest give exactly the loss (and gradient) of training without those samples."""
    x, y = make_data(40)
    n = len(x)
    keep = np.ones(n, bool)
    keep[[3, 17, 31]] = False
    sw = np.where(keep, n / keep.sum(), 0.0)
    a = mlp(seed=4, optimizer=optimizers.SGD(learning_rate=0.5))
    w0 = a.get_weights()
    ha = a.fit(x, y, batch_size=n, epochs=1, sample_weight=sw, shuffle=False, verbose=0)
    b = mlp(seed=4, optimizer=optimizers.SGD(learning_rate=0.5))
    hb = b.fit(x[keep], y[keep], batch_size=n, epochs=1, shuffle=False, verbose=0)
    # the step's loss, from the initial weights, by hand
    ce = hand_ce(hand_forward(w0, x), y)
    assert ha.history["loss"][0] == pytest.approx(np.sum(sw * ce) / n, **APPROX32)
    assert hb.history["loss"][0] == pytest.approx(np.mean(ce[keep]), **APPROX32)
    for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
        assert_close(p, q, k=n, scale=absmax(p), what=f"weight {i}")
    # teeth: plain training on all samples lands elsewhere
    c = mlp(seed=4, optimizer=optimizers.SGD(learning_rate=0.5))
    c.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    assert np.max(np.abs(c.get_weights()[0] - a.get_weights()[0])) > 1e-4


@pytest.mark.parametrize("one_hot", [False, True], ids=["sparse", "one_hot"])
def test_class_weight_weights_the_loss_per_class(one_hot):
    x, y = make_data(40)
    cw = {0: 2.0, 1: 0.25, 2: 1.0}
    loss = "categorical_crossentropy" if one_hot else SCCE
    yy = fastnn.utils.to_categorical(y, K) if one_hot else y
    a = mlp(seed=5, optimizer="sgd", loss=loss)
    w0 = a.get_weights()
    ha = a.fit(x, yy, batch_size=40, epochs=1, class_weight=cw, shuffle=False, verbose=0)
    per_sample_w = np.array([cw[int(c)] for c in y])
    ce = hand_ce(hand_forward(w0, x), y)
    assert ha.history["loss"][0] == pytest.approx(np.mean(per_sample_w * ce), **APPROX32)
    assert ha.history["loss"][0] != pytest.approx(np.mean(ce), **APPROX32)
    # class_weight is the equivalent sample_weight, and multiplies a given sample_weight
    b = mlp(seed=5, optimizer="sgd", loss=loss)
    b.fit(x, yy, batch_size=40, epochs=1, sample_weight=per_sample_w, shuffle=False,
          verbose=0)
    assert_same_weights(a, b, "class_weight vs sample_weight")
    sw = np.linspace(0.1, 1.0, 40)
    c = mlp(seed=5, optimizer="sgd", loss=loss)
    hc = c.fit(x, yy, batch_size=40, epochs=1, class_weight=cw, sample_weight=sw,
               shuffle=False, verbose=0)
    assert hc.history["loss"][0] == pytest.approx(np.mean(sw * per_sample_w * ce), **APPROX32)


def test_class_weight_float_keys_and_float_labels_as_keras():
    """Keras rounds float labels and looks the class up as an int, so the keys of
    dict(zip(np.unique(y), ...)) for float binary targets (0.0, 1.0) work, and a label of
    0.9999 is class 1."""
    x, _ = make_data(40)
    y = (np.arange(40) % 2).astype(np.float32)
    y_noisy = np.where(y == 1, np.float32(0.9999), np.float32(0.0001))
    model = Sequential([Input((x.shape[1],)), Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    cw = dict(zip(np.unique(y), [1.0, 3.0]))          # keys np.float32(0.0) and (1.0)
    want = model._apply_class_weight(y, {0: 1.0, 1: 3.0}, None)
    np.testing.assert_array_equal(model._apply_class_weight(y, cw, None), want)
    np.testing.assert_array_equal(model._apply_class_weight(y_noisy, {0: 1.0, 1: 3.0}, None),
                                  want)
    np.testing.assert_array_equal(want, np.where(y == 1, 3.0, 1.0))
    model.fit(x, y, class_weight=cw, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="class_weight keys must be class indices"):
        model.fit(x, y, class_weight={0.5: 2.0}, epochs=1, verbose=0)


def test_class_weight_refuses_targets_of_3_or_more_dimensions():
    """Keras raises for class_weight with (N, T, K) targets; flattened to (N, T*K) they
    gave argmax classes from the wrong axis, silently."""
    model = Sequential([Input((3, 4)), Dense(5, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    x = np.zeros((6, 3, 4), np.float32)
    y = np.eye(5, dtype=np.float32)[np.arange(18).reshape(6, 3) % 5]
    with pytest.raises(ValueError, match=r"class_weight is not supported for targets of 3 "
                                         r"or more dimensions .*\(6, 3, 5\)"):
        model.fit(x, y, class_weight={0: 2.0}, epochs=1, verbose=0)


def test_train_on_batch_casts_x_to_the_model_dtype(backend):
    """As fit and Keras do: float64, int and bool x on a float32 model (it raised the
    kernel's "b has dtype float32 but a has dtype float64")."""
    losses = []
    for x in (np.ones((10, 4)), np.ones((10, 4), np.int64), np.ones((10, 4), bool),
              np.ones((10, 4), np.float32)):
        set_random_seed(0)
        model = Sequential([Dense(8, activation="relu", input_shape=(4,)),
                            Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        losses.append(model.train_on_batch(x, np.zeros(10, int)))
    assert len(set(losses)) == 1 and np.isfinite(losses[0])


def test_train_and_test_on_batch_as_keras_3(backend):
    """train_on_batch(x, y, sample_weight, class_weight, return_dict) and test_on_batch:
    the loss alone without metrics, else [loss, *metrics] (or a dict), this batch's
    values: the metrics are reset first (Keras fixed their accumulating across calls), and
    measured on the predictions before the update, as fit does."""
    set_random_seed(1)
    model = Sequential([Dense(6, activation="relu", input_shape=(4,)),
                        Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 4)).astype(np.float32)
    pred = np.argmax(model.predict(x, verbose=0), axis=1)
    right, wrong = pred, (pred + 1) % 3
    before = model.test_on_batch(x, right)
    assert before == model.evaluate(x, right, batch_size=12, verbose=0)
    assert before[1] == 1.0
    loss, acc = model.train_on_batch(x, right)
    assert loss == pytest.approx(before[0], rel=1e-6) and acc == 1.0
    pred = np.argmax(model.predict(x, verbose=0), axis=1)
    logs = model.train_on_batch(x, (pred + 1) % 3, return_dict=True)
    assert list(logs) == ["loss", "accuracy"] and logs["accuracy"] == 0.0   # not 0.5
    assert model.test_on_batch(x, wrong, return_dict=True).keys() == logs.keys()
    # class_weight: the weighted loss, as fit's
    plain = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    plain.compile("sgd", "sparse_categorical_crossentropy")
    y = np.arange(12) % 3
    w0 = plain.get_weights()
    weighted = plain.train_on_batch(x, y, class_weight={0: 3.0, 1: 1.0, 2: 1.0})
    plain.set_weights(w0)
    sw = np.where(y == 0, 3.0, 1.0)
    assert isinstance(weighted, float)
    assert weighted == pytest.approx(plain.test_on_batch(x, y, sample_weight=sw), rel=1e-6)


def test_frozen_layers_add_no_regularization_penalty(backend):
    """Keras sums the penalties over trainable weights only: a frozen layer's L2 term is
    not in the loss (it was: 51.47 of which 50.0 the frozen kernel's)."""
    set_random_seed(0)
    model = Sequential([Dense(8, input_shape=(4,),
                              kernel_regularizer=fastnn.regularizers.L2(10.0)),
                        Dense(3, activation="softmax")])
    x, y = np.ones((10, 4), np.float32), np.zeros(10, int)
    model.compile("sgd", "sparse_categorical_crossentropy")
    with_penalty = model.evaluate(x, y, verbose=0)
    penalty = model.layers[0].regularization_loss()
    assert penalty > 1
    model.layers[0].trainable = False
    model.compile("sgd", "sparse_categorical_crossentropy")
    assert model.layers[0].regularization_loss() == 0.0
    data_loss = model.evaluate(x, y, verbose=0)
    assert data_loss == pytest.approx(with_penalty - penalty, rel=1e-5)
    assert model.train_on_batch(x, y) == pytest.approx(data_loss, rel=1e-5)


# ----------------------------------------------------------------------------- evaluate / predict
def test_evaluate_matches_a_hand_computation(backend):
    x, y = make_data(37, seed=1)
    model = mlp(seed=6, kernel_regularizer=fastnn.regularizers.L2(0.01))
    model.fit(*make_data(64), epochs=2, batch_size=16, verbose=0)
    weights = model.get_weights()
    z = hand_forward(weights, x)
    ce = hand_ce(z, y)
    reg = 0.01 * float(np.sum(np.asarray(weights[2], np.float64) ** 2))
    acc = float(np.mean(np.argmax(z, axis=1) == y))
    # the cross-entropy moves at most as much as the logits, K-term sums bounded by |z|
    tol = tolerance(np.float32, k=8, scale=absmax(z))
    loss, got_acc = model.evaluate(x, y, batch_size=8, verbose=0)  # partial last batch
    assert loss == pytest.approx(np.mean(ce) + reg, rel=tol["rtol"], abs=tol["atol"])
    assert got_acc == acc
    # return formats, and sample weights
    sw = np.random.default_rng(0).uniform(0, 2, len(x))
    d = model.evaluate(x, y, batch_size=8, verbose=0, sample_weight=sw, return_dict=True)
    assert set(d) == {"loss", "accuracy"}
    assert d["loss"] == pytest.approx(np.sum(sw * ce) / len(x) + reg, rel=tol["rtol"],
                                      abs=tol["atol"] * absmax(sw))
    assert d["accuracy"] == acc  # metrics are not weighted (Keras "metrics")
    only_loss = mlp(seed=6, metrics_=())
    only_loss.set_weights(weights)
    assert isinstance(only_loss.evaluate(x, y, verbose=0), float)


def test_evaluate_verbose_prints_one_line(capsys):
    """Keras's bar over the batches (stdout is not a terminal: only its final line)."""
    x, y = make_data(20)
    mlp().evaluate(x, y, batch_size=8, verbose=1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("3/3 [=") and "loss:" in out[0] \
        and "accuracy:" in out[0]
    mlp().predict(x, batch_size=8, verbose=2)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("3/3 - ")


def test_predict_in_batches_equals_one_batch(backend):
    set_random_seed(0)
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(8, 8, 2)),
                        MaxPooling2D(2), Flatten(), Dense(5, activation="relu"),
                        Dense(K, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(37, 8, 8, 2)).astype(np.float32)
    whole = model.predict(x, batch_size=37)
    assert whole.shape == (37, K) and whole.dtype == np.float32
    k = 3 * 3 * 4  # the longest reduction: Dense(5) over the 3x3x4 pooled features
    for bs in (1, 5, 32):
        assert_close(model.predict(x, batch_size=bs), whole, k=k, what=f"batch_size={bs}")
    assert_close(model.predict_on_batch(x), whole, k=k, what="predict_on_batch")
    assert_close(model.predict(x.astype(np.float64), batch_size=5), whole, k=k,
                 what="float64 input is cast")
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-5)
    assert model.predict(x[:0]).shape == (0, K)


def test_predict_builds_an_unbuilt_model_then_checks_the_shape():
    model = Sequential([Dense(3)])
    assert not model.built
    assert model.predict(np.ones((4, 5), np.float32)).shape == (4, 3)
    assert model.built and model.input_shape == (None, 5)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 5\), received x "
                                         r"with shape \(4, 6\)"):
        model.predict(np.ones((4, 6), np.float32))


# ----------------------------------------------------------------------------- summary
def test_summary_lists_layers_output_shapes_and_exact_parameter_counts(capsys):
    model = Sequential([Conv2D(8, (3, 3), activation="relu", input_shape=(10, 10, 1),
                               name="conv"),
                        MaxPooling2D((2, 2), name="pool"), Flatten(name="flat"),
                        BatchNormalization(name="bn"),
                        Dense(5, activation="softmax", name="out")], name="tiny")
    # by hand: conv 3*3*1*8 + 8; pooling and flatten none; BatchNorm 4 per feature
    # (gamma, beta trainable; moving mean, variance not); dense 4*4*8 * 5 + 5
    expected = [("conv (Conv2D)", "(None, 8, 8, 8)", 80),
                ("pool (MaxPooling2D)", "(None, 4, 4, 8)", 0),
                ("flat (Flatten)", "(None, 128)", 0),
                ("bn (BatchNormalization)", "(None, 128)", 512),
                ("out (Dense)", "(None, 5)", 645)]
    texts = []
    model.summary(print_fn=texts.append)        # once, with the whole text (Keras 3)
    assert len(texts) == 1
    text = texts[0]
    lines = text.split("\n")
    assert lines[0] == 'Model: "tiny"'
    for name, shape, count in expected:
        row = [l for l in lines if l.startswith(name)]
        assert len(row) == 1, (name, text)
        assert re.search(re.escape(shape) + r"\s+" + re.escape(f"{count:,}") + r"$",
                         row[0]), row[0]
    assert "Total params: 1,237" in text
    assert "Trainable params: 981" in text
    assert "Non-trainable params: 256" in text
    assert model.count_params() == 1237 == sum(w.size for w in model.get_weights())
    model.summary()  # default: print
    assert capsys.readouterr().out.strip() == text


def test_to_json_model_from_json_and_clone_model():
    """to_json / model_from_json and clone_model as Keras's: the architecture (names,
    shapes, activations, regularizers) with newly initialized weights, not compiled;
    clone_model's clone_function is called per layer; the model's own layer classes are
    found without custom_objects; bad input is named."""
    class Scale(fastnn.layers.Layer):
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, grad):
            return 2 * grad

    set_random_seed(3)
    model = Sequential([Conv2D(4, 3, activation="gelu", input_shape=(8, 8, 1), name="c"),
                        Flatten(), Scale(name="s"),
                        Dense(3, activation="softmax", kernel_regularizer="l2")], name="net")
    model.compile("adam", SCCE)
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    text = model.to_json(indent=1)
    assert json.loads(text)["class_name"] == "Sequential"
    with pytest.raises(ValueError, match="Unknown layer"):
        models.model_from_json(text)
    clones = [models.model_from_json(text, custom_objects={"Scale": Scale}),
              models.clone_model(model),
              models.clone_model(model, clone_function=lambda l: type(l).from_config(
                  l.get_config()))]
    for clone in clones:
        assert clone.name == "net" and clone.built and clone.optimizer is None
        assert [l.name for l in clone.layers] == [l.name for l in model.layers]
        assert clone.get_config() == model.get_config()
        assert not np.array_equal(clone.layers[0].kernel, model.layers[0].kernel)
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    seen = []
    models.clone_model(model, clone_function=lambda l: seen.append(l.name) or
                       type(l).from_config(l.get_config()))
    assert seen == [l.name for l in model.layers]
    # an Input layer is not given to clone_function (Keras's): the clone gets its shape
    with_input = Sequential([Input((5,)), Dense(4, name="d1"), Dense(2, name="d2")])
    clone = models.clone_model(with_input, clone_function=lambda l: Dense(l.units, name=l.name))
    assert clone.built and clone.input_shape == (None, 5) and len(clone.layers) == 2
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.to_json(indnt=2)
    for call, exc, msg in (
            (lambda: models.model_from_json("{"), ValueError, "not JSON"),
            (lambda: models.model_from_json('{"class_name": "Model"}'), ValueError,
             "Sequential.to_json's output"),
            (lambda: models.model_from_json(3), TypeError, "json_string must be a str"),
            (lambda: models.clone_model("m"), TypeError, "model must be a Sequential"),
            (lambda: models.clone_model(model, clone_function=lambda l: 3), TypeError,
             "must return a Layer")):
        with pytest.raises(exc, match=msg):
            call()


def test_summary_takes_keras_arguments(capsys):
    """line_length, positions, show_trainable, layer_range and expand_nested as Keras 3's
    summary takes them (each was a TypeError, "unexpected keyword argument")."""
    model = Sequential([Dense(4, activation="relu", input_shape=(3,), name="hidden"),
                        Dropout(0.5, name="drop"), Dense(2, name="out")], name="m")
    model.layers[0].trainable = False

    def lines(**kw):
        model.summary(**kw)
        return capsys.readouterr().out.rstrip("\n").split("\n")

    wide = lines(line_length=60)
    assert wide[1] == wide[-1] == "_" * 60 and wide[3] == "=" * 60
    row = next(l for l in wide if l.startswith("hidden (Dense)"))
    assert row.index("(None, 4)") == 27 and len(row) == 60 and row.endswith(" 16")
    rows = {l.split()[0]: l.split()[-1] for l in lines(show_trainable=True)[4:7]}
    assert rows == {"hidden": "N", "drop": "-", "out": "Y"}
    part = lines(layer_range=["drop", "o.t"])
    assert not any(l.startswith("hidden") for l in part)
    assert any(l.startswith("drop") for l in part) and any(l.startswith("out") for l in part)
    assert "Total params: 26" in part                            # the model's, as Keras
    narrow = lines(line_length=30, positions=[0.5, 0.8, 1.0])    # entries go on below
    at = next(i for i, l in enumerate(narrow) if l.startswith("hidden (Dense)"))
    assert narrow[at].split()[2:] == ["(None,", "4", "16"] and narrow[at + 1].strip() == ")"
    assert lines(positions=[20, 34, 44]) and lines(expand_nested=True)
    assert len(lines(line_length=60, positions=[0.5, 0.8, 1.0], show_trainable=True)[1]) == 60
    assert len(lines(positions=[20, 34, 44], show_trainable=True)[1]) == 56
    for kw, exc, msg in (({"line_length": 2.5}, TypeError, "line_length must be an int"),
                         ({"positions": [0.5, 1.0]}, ValueError, "right edge of each of the 3"),
                         ({"line_length": 10}, ValueError, "4 characters or more"),
                         ({"layer_range": ["x", "y"]}, ValueError, "matches no layer name"),
                         ({"layer_range": "hidden"}, TypeError, "two strings"),
                         ({"show_trainable": 1}, TypeError, "show_trainable"),
                         ({"print_fn": 3}, TypeError, "print_fn must be callable")):
        with pytest.raises(exc, match=msg):
            model.summary(**kw)


# ----------------------------------------------------------------------------- weights
def test_get_weights_set_weights_round_trip():
    x, _ = make_data(10)
    a = mlp(seed=1, batchnorm=True)
    a.fit(*make_data(32), epochs=1, verbose=0)  # BatchNorm moving stats move
    b = mlp(seed=2, batchnorm=True)
    assert weights_differ(a.get_weights(), b.get_weights())
    b.set_weights(a.get_weights())
    assert_same_weights(a, b, "set_weights")
    assert_bitwise(a.predict(x), b.predict(x), what="predictions after set_weights")
    # get_weights returns copies
    w = a.get_weights()
    w[0][...] = 0
    assert not np.array_equal(a.get_weights()[0], w[0])
    assert [w.shape for w in a.get_weights()] == [(D, 8), (8,), (8,), (8,), (8,), (8,),
                                                   (8, K), (K,)]
    with pytest.raises(ValueError, match="has 8 weight arrays, received 7"):
        b.set_weights(a.get_weights()[:-1])
    bad = a.get_weights()
    bad[0] = np.zeros((D + 1, 8), np.float32)
    with pytest.raises(ValueError, match=r"weight 'kernel' of layer .* has shape \(6, 8\), "
                                         r"received \(7, 8\)"):
        b.set_weights(bad)


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip_and_identical_continued_training(backend, tmp_path):
    set_random_seed(0)
    model = Sequential([Input((8, 8, 2)), Conv2D(4, 3, activation="relu"),
                        BatchNormalization(), MaxPooling2D(2), Flatten(), Dropout(0.25),
                        Dense(K, activation="softmax")], name="roundtrip")
    model.compile(optimizers.Adam(learning_rate=0.01), SCCE, ["accuracy"])
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, K, 30)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.fastnn"
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.fastnn"]  # one file, no leftovers
    loaded = load_model(path)
    assert loaded.name == "roundtrip"
    assert loaded.get_config() == model.get_config()
    assert_same_weights(model, loaded, "loaded")
    assert_bitwise(loaded.predict(x), model.predict(x), what="loaded predictions")
    assert type(loaded.optimizer) is optimizers.Adam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    # continued training: same seed -> bit-identical weights, which needs the optimizer
    # state (Adam moments, step count) to have been saved
    set_random_seed(9)
    h1 = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    set_random_seed(9)
    h2 = loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert h1.history == h2.history
    assert_same_weights(model, loaded, "after one more epoch")
    for i, (s1, s2) in enumerate(zip(model.optimizer.get_state(),
                                     loaded.optimizer.get_state())):
        assert_bitwise(np.asarray(s2), np.asarray(s1), what=f"optimizer state {i}")
    # teeth: a fresh optimizer on the same weights ends elsewhere
    fresh = load_model(path, compile=False)
    assert fresh.optimizer is None
    fresh.compile(optimizers.Adam(learning_rate=0.01), SCCE, ["accuracy"])
    set_random_seed(9)
    fresh.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert weights_differ(fresh.get_weights(), model.get_weights())


def test_save_uncompiled_model_and_load_weights(tmp_path):
    model = Sequential([Dense(4, input_shape=(D,)), Dense(2)])
    model.save(tmp_path / "m.fastnn")
    loaded = load_model(tmp_path / "m.fastnn")
    assert loaded.optimizer is None
    assert_same_weights(model, loaded)
    other = Sequential([Dense(4, input_shape=(D,)), Dense(2)])
    other.load_weights(tmp_path / "m.fastnn")
    assert_same_weights(model, other, "load_weights from a full save")
    model.save_weights(tmp_path / "w.fastnn")
    third = Sequential([Dense(4, input_shape=(D,)), Dense(2)])
    third.load_weights(tmp_path / "w.fastnn")
    assert_same_weights(model, third, "save_weights / load_weights")


def _saved_model(tmp_path):
    model = mlp(seed=0)
    model.fit(*make_data(16), epochs=1, verbose=0)
    path = tmp_path / "good.fastnn"
    model.save(path)
    return model, path


def _rezip(src, dst, drop=(), replace=None):
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name not in drop:
                zout.writestr(name, replace.get(name, zin.read(name)))
        for name, data in replace.items():
            if name not in zin.namelist():
                zout.writestr(name, data)


def _meta(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("meta.json"))


def _corrupt_member(good, bad, member):
    """Overwrite the middle of one member's compressed bytes with garbage."""
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 8, start + min(info.compress_size, 40)):
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))


def _unparsable_npy_header(good, member):
    """The bytes of .npy member ``member`` with a padding space of its header turned into
    "(": zipfile's CRC is right (the member is written anew), NumPy's header reader fails
    (with tokenize.TokenError, not ValueError, in NumPy 2.x)."""
    with zipfile.ZipFile(good) as z:
        data = bytearray(z.read(member))
    data[data.index(b"}") + 2] = ord("(")
    return bytes(data)


def _bad_files():
    def truncated_half(good, bad):
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])

    def truncated_tail(good, bad):
        bad.write_bytes(good.read_bytes()[:-1])

    def empty(good, bad):
        bad.write_bytes(b"")

    def random_bytes(good, bad):
        bad.write_bytes(np.random.default_rng(0).bytes(2000))

    def npy_file(good, bad):
        with open(bad, "wb") as f:
            np.save(f, np.zeros(3))

    def zip_without_meta(good, bad):
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("hello.txt", "not a model")

    def other_format(good, bad):
        _rezip(good, bad, replace={"meta.json": json.dumps({"format": "keras"})})

    def meta_not_json(good, bad):
        _rezip(good, bad, replace={"meta.json": b"\x00\x01{"})

    def weights_only_file(good, bad):
        load_model(good).save_weights(bad)

    def missing_weight(good, bad):
        _rezip(good, bad, drop=["weights/1.npy"])

    def corrupt_weight_member(good, bad):
        _corrupt_member(good, bad, "weights/0.npy")

    def corrupt_meta_member(good, bad):
        _corrupt_member(good, bad, "meta.json")

    def weight_header_not_parsing(good, bad):   # tokenize.TokenError before
        _rezip(good, bad, replace={"weights/0.npy": _unparsable_npy_header(good, "weights/0.npy")})

    def optimizer_header_not_parsing(good, bad):
        _rezip(good, bad, replace={"optimizer/1.npy": _unparsable_npy_header(good, "optimizer/1.npy")})

    def compile_without_loss(good, bad):
        meta = _meta(good)
        del meta["compile"]["loss"]
        _rezip(good, bad, replace={"meta.json": json.dumps(meta)})

    def optimizer_state_missing(good, bad):
        _rezip(good, bad, drop=["optimizer/3.npy"])

    def newer_format_version(good, bad):
        meta = _meta(good)
        meta["version"] = 99
        _rezip(good, bad, replace={"meta.json": json.dumps(meta)})

    def _edited(edit):
        def make(good, bad):
            meta = _meta(good)
            edit(meta)
            _rezip(good, bad, replace={"meta.json": json.dumps(meta)})
        make.__name__ = edit.__name__
        return make

    def config_a_list(meta):            # AttributeError before
        meta["config"] = []

    def layer_spec_a_string(meta):
        meta["config"]["layers"][0] = "Dense"

    def huge_units(meta):               # MemoryError before
        meta["config"]["layers"][-1]["config"]["units"] = 10**12

    return [truncated_half, truncated_tail, empty, random_bytes, npy_file, zip_without_meta,
            other_format, meta_not_json, weights_only_file, missing_weight,
            corrupt_weight_member, corrupt_meta_member, weight_header_not_parsing,
            optimizer_header_not_parsing, compile_without_loss,
            optimizer_state_missing, newer_format_version, _edited(config_a_list),
            _edited(layer_spec_a_string), _edited(huge_units), optimizer_state_float16_file]


def optimizer_state_float16_file(good, bad):
    """The optimizer's slots stored as float16 (the C and Numba kernels take no such
    arrays)."""
    with zipfile.ZipFile(good) as z:
        names = [n for n in z.namelist() if n.startswith("optimizer/") and n != "optimizer/0.npy"]
        arrays = {n: np.load(io.BytesIO(z.read(n))) for n in names}
    replace = {}
    for n, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a.astype(np.float16))
        replace[n] = buf.getvalue()
    _rezip(good, bad, replace=replace)


@pytest.mark.parametrize("make_bad", _bad_files(), ids=lambda f: f.__name__)
def test_load_model_rejects_truncated_corrupt_and_foreign_files(tmp_path, make_bad):
    _, good = _saved_model(tmp_path)
    bad = tmp_path / "bad.fastnn"
    make_bad(good, bad)
    with pytest.raises(ValueError, match="fastnn model") as info:
        load_model(bad)
    assert str(bad) in str(info.value)


def test_load_model_missing_file():
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model("/nonexistent/dir/model.fastnn")


def _confidence(y_true, y_pred):
    """A user's metric function (saved by name, loaded through custom_objects)."""
    return np.max(y_pred, axis=-1)


def _unsaveable_models():
    def function_learning_rate():
        model = mlp(seed=1, optimizer=optimizers.SGD(learning_rate=lambda step: 0.1))
        return model, ValueError, "cannot save the model"

    return [function_learning_rate]


class _TenfoldCE(losses.CategoricalCrossentropy):
    """A user's loss subclass: ten times the built-in."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        return 10 * super().__call__(y_true, y_pred, sample_weight)

    def value_and_gradient(self, y_true, y_pred, sample_weight=None):
        v, g = super().value_and_gradient(y_true, y_pred, sample_weight)
        return 10 * v, 10 * g


class _MyDense(Dense):
    """A user's layer subclass."""


class _MyAdam(optimizers.Adam):
    """A user's optimizer subclass."""


def test_custom_objects_round_trip(tmp_path):
    """A model with the user's layer, loss, optimizer and metric function saves; loading
    needs them in custom_objects (Keras's load_model signature) and gives back the same
    model, compile settings and evaluation; without them, a clear error naming the class
    (a loss subclass used to come back silently as the built-in loss)."""
    x, labels = make_data(24)
    y = fastnn.utils.to_categorical(labels, K)
    model = Sequential([_MyDense(8, activation="relu", input_shape=(D,)),
                        Dense(K, activation="softmax")])
    model.compile(_MyAdam(0.01), _TenfoldCE(), metrics=["accuracy", _confidence,
                                                         losses.MeanSquaredError()])
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "custom.fastnn"
    model.save(path)
    custom = {"_MyDense": _MyDense, "_TenfoldCE": _TenfoldCE, "_MyAdam": _MyAdam,
              "_confidence": _confidence}
    back = load_model(path, custom_objects=custom)
    assert type(back.layers[0]) is _MyDense and type(back.loss) is _TenfoldCE
    assert type(back.optimizer) is _MyAdam and back.optimizer.iterations == 1
    want = model.evaluate(x, y, verbose=0, return_dict=True)
    got = back.evaluate(x, y, verbose=0, return_dict=True)
    assert set(got) == set(want) and got == pytest.approx(want)
    for missing in ("_TenfoldCE", "_MyAdam", "_confidence", "_MyDense"):
        partial = {k: v for k, v in custom.items() if k != missing}
        with pytest.raises(ValueError, match=rf"Unknown .*{missing}.*custom_objects") as info:
            load_model(path, custom_objects=partial)
        # compile=False helps for what compile makes, not for a layer
        assert ("compile=False" in str(info.value)) == (missing != "_MyDense"), missing
    arch_only = load_model(path, custom_objects={"_MyDense": _MyDense}, compile=False)
    assert arch_only.optimizer is None
    assert_bitwise(arch_only.predict(x), model.predict(x), what="compile=False")
    with pytest.raises(TypeError, match="custom_objects must be a dict"):
        load_model(path, custom_objects=[_MyDense])


def test_model_checkpoint_refuses_an_unsaveable_model_before_training(tmp_path):
    """ModelCheckpoint checks at on_train_begin that the model can be saved: a plain
    function as the learning rate failed only after the first epoch had trained."""
    model = mlp(seed=1, optimizer=optimizers.SGD(learning_rate=lambda step: 0.1))
    with pytest.raises(ValueError, match="cannot save the model"):
        model.fit(*make_data(16), epochs=2, verbose=0,
                  callbacks=[cbs.ModelCheckpoint(tmp_path / "ck.fastnn")])
    assert model.optimizer.iterations == 0 and os.listdir(tmp_path) == []
    model.fit(*make_data(16), epochs=1, verbose=0,       # weights only: no compile config
              callbacks=[cbs.ModelCheckpoint(tmp_path / "w.fastnn", save_weights_only=True)])
    assert os.listdir(tmp_path) == ["w.fastnn"]


@pytest.mark.parametrize("make", _unsaveable_models(), ids=lambda f: f.__name__)
def test_failed_save_writes_nothing_and_keeps_the_existing_file(tmp_path, make):
    good_model, path = _saved_model(tmp_path)
    before = path.read_bytes()
    model, exc, pattern = make()
    model.fit(*make_data(16), epochs=1, verbose=0)
    with pytest.raises(exc, match=pattern):
        model.save(path)
    assert path.read_bytes() == before
    with pytest.raises(exc, match=pattern):
        model.save(tmp_path / "new.fastnn")
    assert sorted(os.listdir(tmp_path)) == ["good.fastnn"]


def test_save_interrupted_while_writing_is_atomic(tmp_path, monkeypatch):
    """An error in the middle of writing the archive (disk full, Ctrl-C) removes the
    temporary file and leaves the previous save intact."""
    good_model, path = _saved_model(tmp_path)
    before = path.read_bytes()
    model = mlp(seed=5)
    real_save = np.save
    calls = []

    def failing_save(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kw)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.setattr(np, "save", real_save)
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["good.fastnn"]
    assert_same_weights(load_model(path), good_model)


def test_save_onto_a_directory_or_under_a_file_fails_cleanly(tmp_path):
    model = mlp()
    target_dir = tmp_path / "a_directory"
    target_dir.mkdir()
    with pytest.raises(OSError):
        model.save(target_dir)
    assert tmp_leftovers(tmp_path) == [] and os.listdir(target_dir) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        model.save(tmp_path / "file" / "model.fastnn")
    assert sorted(os.listdir(tmp_path)) == ["a_directory", "file"]
    # a directory that takes no new file: the error names the path given, not the
    # temporary file beside it
    if os.path.isdir("/proc"):
        with pytest.raises(OSError, match="/proc/model.fastnn: cannot create a file in /proc"):
            model.save("/proc/model.fastnn")


# ----------------------------------------------------------------------------- callbacks in fit
def _diverging_validation(n=48):
    """Training data and validation data with permuted labels: the better the model
    learns the training data, the worse the validation loss."""
    x, y = make_data(n)
    xv, yv = make_data(24, seed=7)
    return x, y, xv, (yv + 1) % K


def test_early_stopping_restores_the_best_weights_in_fit():
    x, y, xv, yv = _diverging_validation()
    model = mlp(seed=0, optimizer=optimizers.Adam(learning_rate=0.05))
    snaps = []
    record = cbs.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(model.get_weights()))
    es = cbs.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=30, batch_size=8, validation_data=(xv, yv), verbose=0,
                  callbacks=[record, es])
    n_run = len(h.history["val_loss"])
    assert n_run < 30 and es.stopped_epoch == n_run - 1
    best = int(np.argmin(h.history["val_loss"]))
    assert best == es.best_epoch and best < n_run - 1
    for w, s in zip(model.get_weights(), snaps[best]):
        assert_bitwise(w, s, what="restored best weights")
    assert weights_differ(model.get_weights(), snaps[-1])
    # without restore_best_weights the last epoch's weights stay
    model2 = mlp(seed=0, optimizer=optimizers.Adam(learning_rate=0.05))
    model2.fit(x, y, epochs=30, batch_size=8, validation_data=(xv, yv), verbose=0,
               callbacks=[cbs.EarlyStopping(monitor="val_loss", patience=2)])
    for w, s in zip(model2.get_weights(), snaps[-1]):
        assert_bitwise(w, s, what="no restore")


def test_model_checkpoint_saves_the_best_loadable_model(tmp_path):
    x, y, xv, yv = _diverging_validation()
    model = mlp(seed=0, optimizer=optimizers.Adam(learning_rate=0.05))
    snaps = []
    record = cbs.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(model.get_weights()))
    best_path = tmp_path / "best.fastnn"
    h = model.fit(x, y, epochs=4, batch_size=8, validation_data=(xv, yv), verbose=0,
                  callbacks=[record,
                             cbs.ModelCheckpoint(best_path, monitor="val_loss",
                                                 save_best_only=True),
                             cbs.ModelCheckpoint(tmp_path / "ep{epoch:02d}.fastnn")])
    assert sorted(os.listdir(tmp_path)) == ["best.fastnn", "ep01.fastnn", "ep02.fastnn",
                                            "ep03.fastnn", "ep04.fastnn"]
    best = int(np.argmin(h.history["val_loss"]))
    for w, s in zip(load_model(best_path).get_weights(), snaps[best]):
        assert_bitwise(w, s, what="best checkpoint")
    for w, s in zip(load_model(tmp_path / "ep03.fastnn").get_weights(), snaps[2]):
        assert_bitwise(w, s, what="epoch 3 checkpoint")


def test_learning_rate_scheduler_changes_the_step_in_fit():
    x, y = make_data(32)
    model = mlp(optimizer=optimizers.SGD(learning_rate=0.1))
    snaps = [model.get_weights()]
    record = cbs.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(model.get_weights()))
    sched = cbs.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.0)
    h = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[sched, record])
    assert h.history["learning_rate"] == [0.1, 0.0, 0.0]
    assert weights_differ(snaps[0], snaps[1])  # epoch 0 trained
    for a, b in zip(snaps[1], snaps[3]):       # lr 0: frozen
        assert_bitwise(b, a, what="lr=0 epochs")


def test_reduce_lr_on_plateau_reduces_the_optimizer_rate_in_fit():
    x, y = make_data(32)
    model = mlp(optimizer=optimizers.SGD(learning_rate=0.04))
    plateau = cbs.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
    h = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[plateau])
    assert h.history["learning_rate"] == pytest.approx([0.04, 0.04, 0.02])
    assert model.optimizer.learning_rate == pytest.approx(0.01)


def test_csv_logger_in_fit_matches_history(tmp_path):
    x, y = make_data(32)
    path = tmp_path / "log.csv"
    h = mlp().fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25,
                  callbacks=[cbs.CSVLogger(path)])
    rows = path.read_text().splitlines()
    assert rows[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert len(rows) == 3
    for epoch, row in enumerate(rows[1:]):
        fields = row.split(",")
        assert int(fields[0]) == epoch
        for key, value in zip(["accuracy", "loss", "val_accuracy", "val_loss"], fields[1:]):
            assert float(value) == pytest.approx(h.history[key][epoch], rel=1e-12)


def test_terminate_on_nan_stops_on_nan_data_with_a_message(capsys):
    x, y = make_data(40)
    x[13, 2] = np.nan  # in batch 1 (samples 8..15) with shuffle=False
    model = mlp()
    h = model.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0,
                  callbacks=[cbs.TerminateOnNaN()])
    out = capsys.readouterr().out
    assert "Batch 1: Invalid loss, terminating training" in out
    assert h.epoch == [0] and math.isnan(h.history["loss"][0])
    assert model.stop_training
    # teeth: without the callback all epochs run
    h2 = mlp().fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    assert h2.epoch == [0, 1, 2]


def test_terminate_on_nan_stops_a_diverging_run(capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, D)).astype(np.float32)
    y = rng.normal(size=(40, 1)) * 1e3
    set_random_seed(0)
    model = Sequential([Dense(1, input_shape=(D,))])
    model.compile(optimizers.SGD(learning_rate=1e6), "mse")
    with np.errstate(all="ignore"):  # the overflow is the point
        h = model.fit(x, y, epochs=50, batch_size=8, verbose=0,
                      callbacks=[cbs.TerminateOnNaN()])
    assert "Invalid loss, terminating training" in capsys.readouterr().out
    assert len(h.epoch) == 1 and not math.isfinite(h.history["loss"][0])


# ----------------------------------------------------------------------------- progress output
def test_verbose_1_prints_a_keras_style_bar_per_epoch(capsys):
    x, y = make_data(80)
    mlp().fit(x, y, epochs=2, batch_size=8, verbose=1, validation_split=0.2)  # 64 -> 8 steps
    out = capsys.readouterr().out
    assert "\r" not in out  # not a terminal: one final line per bar
    lines = out.strip().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    for bar in (lines[1], lines[3]):
        assert re.match(r"8/8 \[=+\] - \d+s \d+(us|ms|s)/step - \d+ samples/s - loss: "
                        r"\d\.\d{4} - accuracy: \d\.\d{4} - val_loss: \d\.\d{4} - "
                        r"val_accuracy: \d\.\d{4}$", bar), bar


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = make_data(40)
    mlp().fit(x, y, epochs=3, batch_size=8, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert re.match(rf"Epoch {i + 1}/3 - \d+s - loss: \d\.\d{{4}} - accuracy: "
                        rf"\d\.\d{{4}}$", line), line


def test_verbose_0_is_silent(capsys):
    x, y = make_data(40)
    mlp().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- seeding
def test_set_random_seed_makes_runs_bit_identical(backend):
    """Same seed, same thread count: weights init, Dropout masks, shuffling and
    validation_split give bit-identical runs; another seed does not."""
    x, y = make_data(60)

    def run(seed):
        set_random_seed(seed)
        model = Sequential([Dense(16, activation="relu", input_shape=(D,)), Dropout(0.3),
                            Dense(K, activation="softmax")])
        model.compile("adam", SCCE, ["accuracy"])
        h = model.fit(x, y, epochs=3, batch_size=8, shuffle=True, validation_split=0.2,
                      verbose=0)
        return model, h.history

    m1, h1 = run(42)
    m2, h2 = run(42)
    assert h1 == h2
    assert_same_weights(m1, m2, "same seed")
    m3, h3 = run(43)
    assert h3 != h1 and weights_differ(m1.get_weights(), m3.get_weights())


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_set_random_seed_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        set_random_seed(seed)


# ----------------------------------------------------------------------------- bad input
def _compiled():
    return mlp(seed=0)


X, Y = make_data(20)

BAD_INPUT = [
    # (id, exception, regex, call)
    ("x_y_lengths", ValueError, r"x and y must have the same number of samples, received 20 "
     r"and 19", lambda m: m.fit(X, Y[:-1], verbose=0)),
    ("x_y_lengths_evaluate", ValueError, r"same number of samples",
     lambda m: m.evaluate(X, Y[:-1], verbose=0)),
    ("label_too_big", ValueError, r"labels must be in \[0, 3\) .* received values in \[\d, 3\]",
     lambda m: m.fit(X, np.where(np.arange(len(Y)) == 5, 3, Y), verbose=0)),
    ("label_negative", ValueError, r"labels must be in \[0, 3\)",
     lambda m: m.fit(X, Y - 1, verbose=0)),
    ("label_out_of_range_evaluate", ValueError, r"labels must be in \[0, 3\)",
     lambda m: m.evaluate(X, Y + 5, verbose=0)),
    ("input_shape_fit", ValueError, r"expects inputs of shape \(None, 6\), received x with "
     r"shape \(20, 5\)", lambda m: m.fit(X[:, :5], Y, verbose=0)),
    ("input_shape_predict", ValueError, r"expects inputs of shape \(None, 6\)",
     lambda m: m.predict(X[:, :, None])),
    ("input_shape_evaluate", ValueError, r"expects inputs of shape \(None, 6\)",
     lambda m: m.evaluate(np.ones((20, 7)), Y, verbose=0)),
    ("x_1d", ValueError, r"x must have a batch dimension", lambda m: m.predict(np.ones(6))),
    ("x_strings", TypeError, r"x must be numeric, received dtype <U",
     lambda m: m.fit(X.astype(str), Y, verbose=0)),
    ("x_objects", TypeError, r"x must be numeric, received dtype object",
     lambda m: m.predict(X.astype(object))),
    ("x_complex", TypeError, r"x must be numeric", lambda m: m.predict(X.astype(complex))),
    ("x_none", TypeError, r"x must be a numpy array, received NoneType",
     lambda m: m.fit(None, Y, verbose=0)),
    ("x_dict", TypeError, r"x must be a numpy array, received dict",
     lambda m: m.predict({"x": X})),
    ("y_strings", TypeError, r"y must be numeric, received dtype <U",
     lambda m: m.fit(X, Y.astype(str), verbose=0)),
    ("y_one_hot_for_sparse", ValueError, r"sparse labels must have shape \(\d+,\)",
     lambda m: m.fit(X, fastnn.utils.to_categorical(Y, K), verbose=0, batch_size=20)),
    ("sample_weight_length", ValueError, r"sample_weight must have shape \(20,\) or \(20, 1\): "
     r"one weight per sample, received shape \(3,\)",
     lambda m: m.fit(X, Y, sample_weight=[1, 2, 3], verbose=0)),
    # (10, 2) has 20 values: it was flattened and used, pairing weights with wrong samples
    ("sample_weight_2d", ValueError, r"sample_weight must have shape \(20,\) or \(20, 1\).*"
     r"received shape \(10, 2\)", lambda m: m.fit(X, Y, sample_weight=np.ones((10, 2)),
                                                   verbose=0)),
    ("sample_weight_strings", TypeError, r"sample_weight must be numeric",
     lambda m: m.evaluate(X, Y, sample_weight=["a"] * 20, verbose=0)),
    ("y_scalar", ValueError, r"fit: y must be an array with one target per sample \(20\), "
     r"received the scalar 1", lambda m: m.fit(X, 1, verbose=0)),
    ("class_weight_key", TypeError, r"class_weight keys must be class indices \(ints\), "
     r"received 'a'", lambda m: m.fit(X, Y, class_weight={"a": 1}, verbose=0)),
    ("class_weight_value", TypeError, r"class_weight\[0\] must be a real number, received "
     r"'2'", lambda m: m.fit(X, Y, class_weight={0: "2"}, verbose=0)),
    ("class_weight_type", TypeError, r"class_weight must be a dict",
     lambda m: m.fit(X, Y, class_weight=[1, 2, 3], verbose=0)),
    ("batch_size_0", ValueError, r"batch_size must be a positive int, received batch_size=0",
     lambda m: m.fit(X, Y, batch_size=0, verbose=0)),
    ("batch_size_float", ValueError, r"batch_size must be a positive int",
     lambda m: m.predict(X, batch_size=2.5)),
    ("epochs_negative", ValueError, r"epochs must be a non-negative int",
     lambda m: m.fit(X, Y, epochs=-1, verbose=0)),
    ("verbose_3", ValueError, r"verbose must be 0, 1, 2 or 'auto'",
     lambda m: m.fit(X, Y, verbose=3)),
    ("validation_split_1", ValueError, r"validation_split must be in \[0, 1\)",
     lambda m: m.fit(X, Y, validation_split=1.0, verbose=0)),
    ("validation_split_empty", ValueError, r"leaves no validation samples",
     lambda m: m.fit(X, Y, validation_split=1e-17, verbose=0)),   # 1 - 1e-17 == 1.0
    ("validation_split_no_training", ValueError, r"leaves no training samples out of 1\b",
     lambda m: m.fit(X[:1], Y[:1], validation_split=0.5, verbose=0)),
    ("validation_split_str", ValueError, r"validation_split must be in \[0, 1\)",
     lambda m: m.fit(X, Y, validation_split="0.2", verbose=0)),
    ("validation_data_form", ValueError, r"validation_data must be \(x_val, y_val\)",
     lambda m: m.fit(X, Y, validation_data=X, verbose=0)),
    ("validation_data_shape", ValueError, r"expects inputs of shape \(None, 6\)",
     lambda m: m.fit(X, Y, validation_data=(X[:, :4], Y), verbose=0)),
    ("validation_data_lengths", ValueError, r"same number of samples",
     lambda m: m.fit(X, Y, validation_data=(X, Y[:5]), verbose=0)),
    ("validation_labels", ValueError, r"labels must be in \[0, 3\)",
     lambda m: m.fit(X, Y, validation_data=(X, Y + 3), verbose=0)),
    ("categorical_ce_int_labels", ValueError, r"use sparse_categorical_crossentropy",
     lambda m: (m.compile("adam", "categorical_crossentropy"), m.fit(X, Y, verbose=0))),
    ("unknown_optimizer", ValueError, r"Unknown optimizer 'adamm'.*'adam'",
     lambda m: m.compile("adamm", SCCE)),
    ("unknown_loss", ValueError, r"Unknown loss 'sparse_crossentropy'; valid names: .*"
     r"'sparse_categorical_crossentropy'", lambda m: m.compile("adam", "sparse_crossentropy")),
    ("unknown_metric", ValueError, r"Unknown metric 'acuracy'; valid names: .*'accuracy'",
     lambda m: (m.compile("adam", SCCE, ["acuracy"]), m.fit(X, Y, verbose=0))),
    ("unknown_activation", ValueError, r"Unknown activation 'rleu'; valid names: .*'relu'",
     lambda m: m.add(Dense(2, activation="rleu"))),
    ("unknown_initializer", ValueError, r"Unknown initializer 'glorot'.*'glorot_uniform'",
     lambda m: m.add(Dense(2, kernel_initializer="glorot"))),
    ("unknown_regularizer", ValueError, r"Unknown regularizer 'l3'.*'l2'",
     lambda m: m.add(Dense(2, kernel_regularizer="l3"))),
    ("optimizer_type", TypeError, r"Could not interpret optimizer identifier 3",
     lambda m: m.compile(3, SCCE)),
    ("loss_type", TypeError, r"loss must be a name, a config, a Loss subclass or instance",
     lambda m: m.compile("adam", 3)),
    ("callback_class", TypeError, r"callbacks must be instances.*TerminateOnNaN\(\.\.\.\)",
     lambda m: m.fit(X, Y, verbose=0, callbacks=[cbs.TerminateOnNaN])),
]


@pytest.mark.parametrize("exc,pattern,call", [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_raises_a_clear_error_and_changes_nothing(tmp_path, exc, pattern, call):
    """Each bad input raises before anything is trained or written: the layers and weights
    are unchanged and the callbacks' files (CSV log, checkpoint) do not exist."""
    model = _compiled()
    before = model.get_weights()
    n_layers = len(model.layers)
    log, ckpt = tmp_path / "log.csv", tmp_path / "ckpt.fastnn"
    real_fit = model.fit

    def fit_with_files(*args, **kw):
        kw.setdefault("callbacks", [])
        kw["callbacks"] = list(kw["callbacks"]) + [cbs.CSVLogger(log),
                                                   cbs.ModelCheckpoint(ckpt, monitor="loss")]
        return real_fit(*args, **kw)

    model.fit = fit_with_files
    with pytest.raises(exc, match=pattern):
        call(model)
    assert os.listdir(tmp_path) == []
    assert len(model.layers) == n_layers
    for w0, w1 in zip(before, model.get_weights()):
        assert_bitwise(w1, w0, what="weights after bad input")


def test_bad_input_model_still_trains_afterwards():
    model = _compiled()
    for bad in (lambda: model.fit(X, Y[:-1], verbose=0),
                lambda: model.fit(X, Y + 3, verbose=0),
                lambda: model.fit(X[:, :5], Y, verbose=0)):
        with pytest.raises(ValueError):
            bad()
    h = model.fit(X, Y, epochs=2, verbose=0)
    assert len(h.epoch) == 2 and all(math.isfinite(v) for v in h.history["loss"])


@pytest.mark.parametrize("what,call", [
    ("summary", lambda m: m.summary()),
    ("get_weights", lambda m: m.get_weights()),
    ("set_weights", lambda m: m.set_weights([])),
    ("count_params", lambda m: m.count_params()),
    ("output_shape", lambda m: m.output_shape),
    ("save", lambda m: m.save("never-written.fastnn")),
])
def test_using_an_unbuilt_model_says_how_to_build_it(what, call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = Sequential([Dense(3)])
    with pytest.raises(ValueError, match=rf"{what}: the model is not built yet; give the "
                                         rf"first layer an input_shape"):
        call(model)
    assert os.listdir(tmp_path) == []


def test_predict_on_an_empty_model_and_training_before_compile():
    with pytest.raises(ValueError, match="the model has no layers; add some with model.add"):
        Sequential().predict(X)
    model = Sequential([Dense(K, activation="softmax", input_shape=(D,))])
    with pytest.raises(ValueError, match=r"must be compiled before training: call "
                                         r"model.compile"):
        model.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match="must be compiled before evaluate"):
        model.evaluate(X, Y, verbose=0)
    with pytest.raises(ValueError, match="must be compiled before training"):
        model.train_on_batch(X, Y)


@pytest.mark.parametrize("data_format,padding", [("channels_last", "valid"),
                                                 ("channels_last", "same"),
                                                 ("channels_first", "valid")])
def test_relu_maxpool_pairs_backward_like_the_layer_chain(backend, data_format, padding):
    # Sequential applies relu's derivative to the pooled gradient for Conv2D(relu) ->
    # MaxPooling2D and sums the bias gradient there (models._relu_pool_backward); the
    # gradients must be those of the plain layer-by-layer chain (float64; the bias gradient
    # is summed in another order, so up to rounding).
    set_random_seed(3)
    f64 = dict(dtype="float64", data_format=data_format)
    shape = (9, 9, 2) if data_format == "channels_last" else (2, 9, 9)
    model = Sequential([Conv2D(4, 3, activation="relu", padding=padding, input_shape=shape,
                               **f64),
                        MaxPooling2D(2, padding=padding, **f64),
                        Conv2D(3, 2, activation="relu", **f64),
                        MaxPooling2D(2, strides=1, **f64), Flatten(dtype="float64"),
                        Dense(K, dtype="float64")])
    model.compile(optimizers.SGD(0.0), losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5,) + shape)
    y = rng.integers(0, K, 5)
    model.train_on_batch(x, y)                     # lr 0: the weights stay as they are
    steps = model._backward_steps(model.layers)
    assert [getattr(s, "func", None) for s in steps].count(fastnn.models._relu_pool_backward) == 2
    fused = {(i, k): layer.grads[k].copy() for i, layer in enumerate(model.layers)
             for k in layer.params}

    h = x
    for layer in model.layers:
        h = layer.forward(h, training=True)
    g = model.loss.gradient(y, h)
    for layer in reversed(model.layers):
        g = layer.backward(g)
    for (i, k), value in fused.items():
        ref = model.layers[i].grads[k]
        assert np.abs(ref).max() > 0, (i, k)
        np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-14 * np.abs(ref).max(),
                                   err_msg=f"layer {i} d{k}")


def test_conv_relu_maxpool_pair_backward_reuses_its_buffers(backend):
    # a first Conv2D(relu) + MaxPooling2D pair trains from the pooled gradient; where the
    # backend forms the convolution's gradient (the reference; not the C and Numba
    # backends' fused paths, which never form it), it goes to the pooling's reused work
    # array: no array that size is allocated per step
    set_random_seed(5)
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(9, 9, 2)),
                        MaxPooling2D(2), Flatten(), Dense(K)])
    model.compile(optimizers.SGD(0.01),
                  losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 9, 9, 2)).astype("float32")
    y = rng.integers(0, K, 6)
    model.train_on_batch(x, y)
    pool = model.layers[1]
    first = pool.__dict__.get("_bufs", {}).get("dx")
    model.train_on_batch(x, y)
    again = pool.__dict__.get("_bufs", {}).get("dx")
    assert again is first
    if backend in ("c", "numba"):   # fused: no convolution-sized gradient at all
        assert first is None
    else:   # the composition: the scatter went to the pooling's buffer
        assert first is not None and first.shape == (6, 6, 6, 4)


def test_pooling_backward_after_the_pairs_forward(backend):
    # MaxPooling2D's own backward after the pair's forward (layers.conv.conv_pool_forward,
    # whose argmax the C backend keeps as window positions, one byte each): the gradient
    # the layer chain scatters, on the crop the windows read (the 9 x 8 output's 8 x 8)
    set_random_seed(6)
    model = Sequential([Conv2D(8, 3, activation="relu", input_shape=(11, 10, 2)),
                        MaxPooling2D(2)])
    conv, pool = model.layers
    x = np.random.default_rng(4).normal(size=(3, 11, 10, 2)).astype("float32")
    y = fastnn.layers.conv.conv_pool_forward(conv, pool, x, training=True)
    assert pool._argmax.dtype == (np.uint8 if backend == "c" else np.int64)
    g = np.random.default_rng(5).normal(size=y.shape).astype("float32")
    got = pool.backward(g)
    assert got.shape == (3, 8, 8, 8)
    z = conv.forward(x, training=True)
    assert pool.forward(z, training=True).tobytes() == y.tobytes()
    want = pool.backward(g)
    assert want.shape == (3, 9, 8, 8)
    assert got.tobytes() == np.ascontiguousarray(want[:, :8]).tobytes()
    assert not want[:, 8:].any()


def test_conv_relu_maxpool_pairs_forward_bit_for_bit(backend, monkeypatch):
    # Sequential runs Conv2D(relu) -> MaxPooling2D(2) as one call
    # (layers.conv.conv_pool_forward); evaluation and prediction give the bits of the
    # layer-by-layer chain; strides 1 or "same" padding are not paired. The first conv's
    # output is 9 x 8: its last row is read by no window, and the paired backward skips it
    # (conv2d_backward's crop), so training sums the weight gradient over fewer terms: in
    # float64, equal up to rounding.
    def build(dtype):
        set_random_seed(4)
        kw = dict(dtype=dtype)
        model = Sequential([Conv2D(5, 3, activation="relu", input_shape=(11, 10, 2), **kw),
                            MaxPooling2D(2, **kw), Conv2D(17, 2, activation="relu", **kw),
                            MaxPooling2D(2, strides=1, **kw),
                            Conv2D(3, 1, activation="relu", **kw),
                            MaxPooling2D(2, padding="same", **kw), Flatten(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 11, 10, 2))
    y = rng.integers(0, K, 37)
    fused = build("float64")
    steps = fused._forward(x[:2], False) is not None and fused._forward_cache
    funcs = [getattr(s, "func", None) for s in steps[tuple(map(id, fused.layers))]]
    assert funcs.count(fastnn.layers.conv.conv_pool_forward) == 1
    hist = fused.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    x32 = x.astype("float32")
    fused32 = build("float32")
    p_fused, e_fused = fused32.predict(x32, verbose=0), fused32.evaluate(x32, y, verbose=0)
    monkeypatch.setattr(fastnn.models, "conv_pool_fusable", lambda conv, pool: False)
    plain = build("float64")
    hist_plain = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    np.testing.assert_allclose(hist["loss"], hist_plain["loss"], rtol=1e-12)
    assert hist["accuracy"] == hist_plain["accuracy"]
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    plain32 = build("float32")
    assert p_fused.tobytes() == plain32.predict(x32, verbose=0).tobytes()
    assert e_fused == plain32.evaluate(x32, y, verbose=0)


@pytest.mark.parametrize("act", [None, "sigmoid", "tanh", "elu", "leaky_relu", "softsign"])
def test_conv_monotone_activation_maxpool_pairs(backend, act, monkeypatch):
    # Conv2D with a non-decreasing activation f -> MaxPooling2D(2) also runs as one call
    # (layers.conv.conv_pool_forward): the pooled pre-activations, then f on a quarter of
    # the elements, and the backward from the pooled gradient. Random normal data has no
    # ties, so training follows the layer chain's (float64: up to the bias gradient's
    # summation order), and float32 predictions match it to the activation's rounding.
    def build(dtype):
        set_random_seed(7)
        kw = dict(dtype=dtype)
        model = Sequential([Conv2D(5, 3, activation=act, input_shape=(11, 10, 2), **kw),
                            MaxPooling2D(2, **kw), Conv2D(6, 2, activation=act, **kw),
                            MaxPooling2D(2, **kw), Flatten(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    _assert_pairs_train_like_the_chain(build, (21, 11, 10, 2), "conv_pool_fusable",
                                       fastnn.layers.conv.conv_pool_forward, monkeypatch)


@pytest.mark.parametrize("cls,args", [("Activation", ("elu",)), ("Activation", ("sigmoid",)),
                                      ("ReLU", ()), ("ReLU", (6.0, 0.1, 0.5))])
def test_activation_layer_then_maxpool_runs_after_the_pooling(backend, cls, args,
                                                             monkeypatch):
    # an Activation (or ReLU) layer of a non-decreasing f followed by a MaxPooling2D (of
    # any size and padding) runs after the pooling, on the pooled elements
    # (layers.conv.act_pool_forward): training follows the layer chain's in float64 (no
    # ties in random data), float32 predictions match it to f's rounding. (The first
    # BatchNormalization - f - MaxPooling2D(2) would run as one, bn_pool_forward: kept
    # apart here, tested below.)
    monkeypatch.setattr(fastnn.models, "bn_pool_fusable", lambda bn, pool: False)

    def build(dtype):
        set_random_seed(9)
        kw = dict(dtype=dtype)
        act = getattr(fastnn.layers, cls)
        # (no bias before BatchNormalization: its gradient is rounding noise, ~1e-12)
        model = Sequential([Conv2D(4, 3, use_bias=False, input_shape=(10, 10, 2), **kw),
                            BatchNormalization(**kw), act(*args, **kw),
                            MaxPooling2D(2, **kw), Conv2D(5, 2, **kw), act(*args, **kw),
                            MaxPooling2D(3, strides=2, padding="same", **kw), Flatten(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    _assert_pairs_train_like_the_chain(build, (19, 10, 10, 2), "act_pool_pairable",
                                       fastnn.layers.conv.act_pool_forward, monkeypatch)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "elu"])
def test_conv_activation_layer_maxpool_runs_as_one(backend, act, monkeypatch):
    # Keras's Conv2D(f, k) - Activation(act) - MaxPooling2D() (here also a ReLU layer) runs
    # as the pair Conv2D(activation=act) - MaxPooling2D(2) does, the activation on the
    # pooled values (layers.conv.conv_act_pool_forward): the convolution's output is never
    # written. Training follows the layer chain's in float64 (no ties in random data), the
    # first pair's odd 9 x 8 output cropped as conv_pool_forward crops it.
    def build(dtype):
        set_random_seed(13)
        kw = dict(dtype=dtype)
        model = Sequential([Conv2D(5, 3, input_shape=(11, 10, 2), **kw),
                            fastnn.layers.Activation(act, **kw), MaxPooling2D(2, **kw),
                            Conv2D(6, 2, **kw), fastnn.layers.ReLU(**kw),
                            MaxPooling2D(2, **kw), Flatten(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    # a plain relu (both layers' forms) runs inside the pair's kernels, as
    # Conv2D(activation="relu") does; another activation after the pooling
    model = build("float32")
    model.fit(np.zeros((4, 11, 10, 2), "float32"), np.zeros(4, int), verbose=0)
    assert model.layers[0]._pool_act == ("relu" if act == "relu" else "identity")
    assert model.layers[3]._pool_act == "relu"
    _assert_pairs_train_like_the_chain(build, (21, 11, 10, 2), "conv_pool_fusable",
                                       fastnn.layers.conv.conv_act_pool_forward, monkeypatch)


def test_linear_layer_then_relu_layer_runs_as_one(backend, monkeypatch):
    # Keras's Conv2D(f, k) - Activation("relu") and Dense(n) - ReLU() run as
    # activation="relu" does, relu in the layer's bias + activation kernel
    # (layers.conv.linear_act_forward), forward and backward; a relu layer followed by a
    # MaxPooling2D stays with the pooling (act_pool_forward: here a 3x3 "same" pool, which
    # the convolution does not pair with). Training follows the layer chain's.
    def build(dtype):
        set_random_seed(17)
        kw = dict(dtype=dtype)
        model = Sequential([Conv2D(4, 3, padding="same", input_shape=(9, 8, 2), **kw),
                            fastnn.layers.Activation("relu", **kw), Conv2D(5, 3, **kw),
                            fastnn.layers.ReLU(**kw),
                            MaxPooling2D(3, strides=2, padding="same", **kw), Flatten(**kw),
                            Dense(8, **kw), fastnn.layers.ReLU(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    _assert_pairs_train_like_the_chain(build, (19, 9, 8, 2), "linear_act_fusable",
                                       fastnn.layers.conv.linear_act_forward, monkeypatch)
    monkeypatch.undo()
    model = build("float32")
    funcs = [getattr(s, "func", None) for s in model._backward_steps(model.layers)]
    assert funcs.count(fastnn.layers.conv.linear_act_backward) == 2
    assert funcs.count(fastnn.layers.conv.act_pool_backward) == 1
    # an activation given to the layer since the plan was made: the two layers' own calls
    x = np.random.default_rng(0).normal(size=(3, 9, 8, 2)).astype("float32")
    assert (model._forward(x, False, model.layers[:2]) <= 0).any()
    model.layers[0]._set_activation("sigmoid")
    h = model._forward(x, False, model.layers[:2])
    np.testing.assert_array_equal(h, np.maximum(model.layers[0].forward(x), 0))
    assert (h > 0).all()


@pytest.mark.parametrize("act,frozen", [(None, False), ("relu", False), ("elu", False),
                                        ("relu", True)])
def test_batchnorm_then_maxpool_runs_as_one(backend, act, frozen, monkeypatch):
    # BatchNormalization (- a non-decreasing activation) - MaxPooling2D(2) runs as one call
    # in training (layers.normalization.bn_pool_forward: ops.batchnorm_maxpool_forward, the
    # activation on the pooled elements), its backward from the pooled gradient; odd
    # sizes (9 x 8, then 3 x 3) leave rows and columns no window reads. Training follows
    # the layer chain's in float64 (the sums over the pooled elements: to rounding);
    # inference the same values. A frozen BatchNormalization (trainable=False) runs on its
    # moving statistics in training too. (Without an activation, the first beta's gradient
    # is rounding noise, ~1e-13, a sum the second BatchNormalization zeroes: no beta there.)
    def build(dtype):
        set_random_seed(11)
        kw = dict(dtype=dtype)
        def mid():
            return [fastnn.layers.Activation(act, **kw)] if act else []

        model = Sequential([Conv2D(4, 3, use_bias=False, input_shape=(11, 10, 2), **kw),
                            BatchNormalization(center=act is not None, **kw), *mid(),
                            MaxPooling2D(2, **kw), Conv2D(5, 2, use_bias=False, **kw),
                            BatchNormalization(scale=False, **kw), *mid(),
                            MaxPooling2D(2, **kw), Flatten(**kw),
                            Dense(K, activation="softmax", **kw)])
        model.layers[1].trainable = not frozen
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model

    _assert_pairs_train_like_the_chain(build, (19, 11, 10, 2), "bn_pool_fusable",
                                       fastnn.layers.normalization.bn_pool_forward,
                                       monkeypatch)


def _assert_pairs_train_like_the_chain(build, shape, predicate, pair_forward, monkeypatch):
    """``build(dtype)``'s model (two layer pairs Sequential runs as ``pair_forward``)
    trains as its layer chain (``fastnn.models.<predicate>`` patched to refuse every
    pair) on random normal data, which has no ties: float64 losses and weights to
    rounding (the bias gradients are summed in another order), float32 predictions to
    the activation's rounding."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=shape)
    y = rng.integers(0, K, shape[0])
    x32 = x.astype("float32")
    paired, paired32 = build("float64"), build("float32")
    hist = paired.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    funcs = [getattr(s, "func", None) for v in paired._forward_cache.values() for s in v]
    assert funcs.count(pair_forward) == 2
    p_paired = paired32.predict(x32, verbose=0)
    monkeypatch.setattr(fastnn.models, predicate, lambda a, b: False)
    plain, plain32 = build("float64"), build("float32")
    hist_plain = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    np.testing.assert_allclose(hist["loss"], hist_plain["loss"], rtol=1e-12)
    for a, b in zip(paired.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(p_paired, plain32.predict(x32, verbose=0), rtol=1e-5,
                               atol=1e-7)


def test_act_pool_pairable_only_for_nondecreasing_layers():
    pool = MaxPooling2D(2)
    pairable = fastnn.layers.conv.act_pool_pairable
    assert not pairable(fastnn.layers.Activation("gelu"), pool)
    assert not pairable(fastnn.layers.Softmax(), pool)
    assert not pairable(fastnn.layers.Activation("tanh"), fastnn.layers.AveragePooling2D(2))
    # a ReLU layer is non-decreasing exactly when its threshold is >= 0
    x = np.linspace(-3.0, 8.0, 11001)
    for kw in (dict(threshold=0.5, max_value=6.0, negative_slope=0.1),
               dict(threshold=-0.5, negative_slope=0.1), dict(threshold=2.0, max_value=1.0)):
        relu = fastnn.layers.ReLU(**kw)
        assert pairable(relu, pool) == (np.diff(relu.forward(x)) >= 0).all(), kw


@pytest.mark.parametrize("act", ["gelu", "silu", "mish", "hard_silu",
                                 fastnn.activations.ELU(-0.5), lambda v: v * v])
def test_conv_maxpool_not_paired_for_other_activations(act):
    # max pooling commutes only with a non-decreasing f: gelu, silu, mish, hard_silu, elu
    # with a negative alpha and a user's function keep the layer chain
    conv = Conv2D(3, 3, activation=act, input_shape=(8, 8, 1))
    assert not fastnn.layers.conv.conv_pool_fusable(conv, MaxPooling2D(2))
    assert fastnn.layers.conv.conv_pool_fusable(Conv2D(3, 3, activation="selu"),
                                                MaxPooling2D(2))


# ----------------------------------------------------------------------------- dense step
def _dense_model(dtype="float32", hidden=("relu", None), use_bias=True, extra=(),
                 dropout=None, act_layers=False):
    """Flatten, Dense(9) per hidden activation (each followed by Dropout(dropout) unless
    None), ``extra`` layers, Dense(K + 2, softmax); with ``act_layers``, each activation
    as an Activation layer after a linear Dense (Keras's other spelling)."""
    set_random_seed(5)
    layers = [Flatten(input_shape=(3, 4), dtype=dtype)]

    def dense(units, a):
        if not act_layers:
            return [Dense(units, activation=a, use_bias=use_bias, dtype=dtype)]
        return [Dense(units, use_bias=use_bias, dtype=dtype),
                fastnn.layers.Activation(a, dtype=dtype)]
    for a in hidden:
        layers += dense(9, a)
        if dropout is not None:
            layers.append(Dropout(dropout, dtype=dtype))
    layers += list(extra) + dense(K + 2, "softmax")
    return Sequential(layers)


# optimizers by name, a new one per model
_DENSE_OPTIMIZERS = {
    "adam-amsgrad": lambda: optimizers.Adam(0.01, amsgrad=True),
    "adam-schedule": lambda: optimizers.Adam(
        optimizers.schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.5)),
    "adamw": lambda: optimizers.AdamW(0.01),
    "adam-clipnorm": lambda: optimizers.Adam(0.01, clipnorm=0.05),
    "sgd-momentum": lambda: optimizers.SGD(0.05, momentum=0.9),
    "sgd-nesterov": lambda: optimizers.SGD(
        optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.7),
        momentum=0.8, nesterov=True),
    "sgd-clipvalue": lambda: optimizers.SGD(0.05, clipvalue=0.01),
}


def _fit_dense(model, monkeypatch, compiled, loss=SCCE, optimizer="adam", cast=True,
               **fit_kw):
    """fit on fixed data (float64, or cast to the model's dtype), with the compiled dense
    step allowed or not; returns the weights, the history and the optimizer's state
    (iterations, then every slot)."""
    from fastnn import _dense_step
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70, 3, 4))
    if cast:
        x = x.astype(model.layers[-1].dtype)
    y = rng.integers(0, K + 2, 70)
    if loss == "categorical_crossentropy":
        y = np.eye(K + 2)[y]
    model.compile(_DENSE_OPTIMIZERS.get(optimizer, lambda: optimizer)(), loss,
                  metrics=["accuracy"])
    with monkeypatch.context() as mp:
        if not compiled:
            mp.setattr(_dense_step.DenseStep, "build", classmethod(lambda cls, m: None))
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, **fit_kw)
    opt = model.optimizer
    state = [np.array(opt.iterations)] + [a for s in opt._param_slots for a in s]
    return model.get_weights() + state, history.history


@pytest.mark.parametrize("case", [
    dict(), dict(dtype="float64"), dict(use_bias=False), dict(hidden=()),
    dict(hidden=("relu", "relu", "linear")), dict(loss="categorical_crossentropy"),
    dict(optimizer="sgd"), dict(optimizer="rmsprop", dtype="float64"), dict(dropout=0.4),
    dict(dropout=0.0, dtype="float64"), dict(dropout=0.25, hidden=("relu", None)),
    dict(optimizer="adam-amsgrad"), dict(optimizer="adam-schedule", use_bias=False),
    dict(optimizer="adamw"), dict(optimizer="adam-clipnorm", dtype="float64"),
    dict(cast=False), dict(optimizer="sgd-momentum"),
    dict(optimizer="sgd-nesterov", dtype="float64", dropout=0.25),
    dict(optimizer="sgd-clipvalue"), dict(hidden=("sigmoid", "tanh")),
    dict(hidden=("tanh", "sigmoid"), dtype="float64", dropout=0.25, use_bias=False),
    dict(act_layers=True), dict(act_layers=True, hidden=("sigmoid", "linear"), dropout=0.25),
    dict(act_layers=True, hidden=("tanh", "relu"), dtype="float64", optimizer="sgd")],
    ids=str)
def test_compiled_dense_step_is_bitwise_the_layer_by_layer_step(monkeypatch, case):
    """Sequential trains Flatten -> Dense(relu/linear/sigmoid/tanh) [-> Dropout]... ->
    Dense(softmax), or Dense -> Activation(...) [-> Dropout]... -> Dense -> Activation(softmax),
    with one C call per step (fastnn._dense_step), running the kernels the layers run, in
    the same order, with the Dropout layers' own masks, and a plain Adam's update inside
    the call: the weights, the optimizer's state and the logged losses and accuracies
    after two epochs (batches of 16 and a last one of 6) are bit for bit those of the
    layer-by-layer path."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    case = dict(case)
    fit_kw = {k: case.pop(k) for k in ("loss", "optimizer", "cast") if k in case}
    fast = _fit_dense(_dense_model(**case), monkeypatch, True, **fit_kw)
    model = _dense_model(**case)
    slow = _fit_dense(model, monkeypatch, False, **fit_kw)
    assert fast[1] == slow[1]
    for a, b in zip(fast[0], slow[0]):
        assert_bitwise(a, b, what=str(case))
    fast_model = _dense_model(**case)
    _fit_dense(fast_model, monkeypatch, True, **fit_kw)
    assert fast_model._dense_step is not None          # the compiled step did run
    fused = fast_model._dense_step._opt_key is not None
    assert fused == (fit_kw.get("optimizer", "adam") in ("adam", "adam-amsgrad",
                                                          "adam-schedule", "sgd",
                                                          "sgd-momentum", "sgd-nesterov"))


@pytest.mark.parametrize("data_format,shape", [("channels_first", (3, 4, 5)),
                                               ("channels_first", (3, 4)),
                                               ("channels_first", (12,)),
                                               ("channels_last", (3, 4, 5))])
def test_compiled_dense_step_flattens_as_the_flatten_layer(monkeypatch, data_format, shape):
    """A channels_first Flatten of a 3-D or 4-D input moves the channels last before
    flattening: the compiled step, which reads x's memory as it is, must not take it (it
    did, and trained on permuted features: the first loss 2.0158 where evaluate gave
    1.7310 on the same weights); the other Flattens leave the memory as it is and keep
    the compiled step, bit for bit the layer path either way."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    from fastnn import _dense_step
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64,) + shape).astype(np.float32)
    y = rng.integers(0, 4, 64)
    out = []
    for compiled in (True, False):
        set_random_seed(0)
        model = Sequential([Input(shape), Flatten(data_format=data_format),
                            Dense(8, activation="relu"), Dense(4, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy")
        before = model.evaluate(x, y, batch_size=64, verbose=0)
        with monkeypatch.context() as mp:
            if not compiled:
                mp.setattr(_dense_step.DenseStep, "build", classmethod(lambda cls, m: None))
            first = model.train_on_batch(x, y)
            hist = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
        assert first == pytest.approx(before, rel=1e-6)
        takes = data_format == "channels_last" or len(shape) < 2
        assert (model._dense_step is not None) == (compiled and takes)
        out.append((model.get_weights(), hist))
    assert out[0][1] == out[1][1]
    for a, b in zip(out[0][0], out[1][0]):
        assert_bitwise(a, b, what=data_format)


@pytest.mark.parametrize("optimizer", ["adam", "adam-amsgrad", "sgd-momentum",
                                       "sgd-nesterov"])
def test_compiled_dense_step_flushes_subnormal_slots_as_the_optimizers_do(monkeypatch,
                                                                          optimizer):
    """The compiled step's update flushes subnormal slots to +0 as the optimizers do
    (ops.adam_update's flush_subnormal): with one input feature always 0 (an always-black
    pixel) the first layer's slots for its weights start at a stuck subnormal value and
    end at 0, bit for bit as in the layer-by-layer path."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    from fastnn import _dense_step
    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 3, 4)).astype(np.float32)
    x[:, 0, 0] = 0
    y = rng.integers(0, K + 2, 48)
    sub = np.float32(4) * np.finfo(np.float32).smallest_subnormal
    out = []
    for compiled in (True, False):
        model = _dense_model()
        model.compile(_DENSE_OPTIMIZERS.get(optimizer, lambda: optimizer)(), SCCE)
        with monkeypatch.context() as mp:
            if not compiled:
                mp.setattr(_dense_step.DenseStep, "build", classmethod(lambda cls, m: None))
            model.fit(x[:16], y[:16], epochs=1, batch_size=16, verbose=0)   # the slots
            opt = model.optimizer
            for a in opt._param_slots[0]:           # the first Dense layer's kernel
                a[0] = -sub                         # feature 0's weights: gradient 0
            model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        assert (model._dense_step is not None) == compiled
        for a in opt._param_slots[0]:
            assert (a[0] == 0).all() and not np.signbit(a[0]).any()
        out.append(model.get_weights() + [a for s in opt._param_slots for a in s])
    for a, b in zip(*out):
        assert_bitwise(a, b, what=optimizer)


class _EveryBatch(cbs.Callback):
    """A callback that needs every batch: fit then runs one step per call."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((batch, dict(logs)))


@pytest.mark.parametrize("case", [
    dict(), dict(dtype="float64"), dict(loss="categorical_crossentropy"),
    dict(dropout=0.3), dict(optimizer="adam-schedule", dtype="float64"),
    dict(optimizer="adam-amsgrad", shuffle=False), dict(optimizer="sgd"),
    dict(optimizer="sgd-nesterov", dtype="float64"),
    dict(metrics=["accuracy", metrics.Precision(), metrics.F1Score(average="macro")]),
    dict(verbose=1)], ids=str)
def test_fit_trains_runs_of_batches_in_one_call_bit_for_bit(monkeypatch, capsys, case):
    """When no callback needs every batch and every metric counts, fit trains runs of
    full batches in one compiled call each (DenseStep.run_steps: rows gathered in C,
    dropout masks and Adam's constants per step): weights, optimizer state and the
    history are bit for bit those of one call per step, for runs of 2 batches and a
    last partial batch, and the progress bar still ends on the same numbers."""
    calls = run_steps_calls(monkeypatch, rows=32)            # runs of 2 batches of 16
    case = dict(case)
    fit_kw = {k: case.pop(k) for k in ("loss", "optimizer", "shuffle", "verbose")
              if k in case}
    mets = case.pop("metrics", ["accuracy"])
    out = []
    for callbacks in ([], [_EveryBatch()]):
        model = _dense_model(**case)
        rng = np.random.default_rng(2)
        x = rng.normal(size=(70, 3, 4)).astype(model.layers[-1].dtype)
        y = rng.integers(0, K + 2, 70)
        if fit_kw.get("loss") == "categorical_crossentropy":
            y = np.eye(K + 2)[y]
        model.compile(_DENSE_OPTIMIZERS.get(fit_kw.get("optimizer", "adam"),
                                            lambda: fit_kw.get("optimizer", "adam"))(),
                      fit_kw.get("loss", SCCE),
                      metrics=[m if isinstance(m, str) else type(m).from_config(
                          m.get_config()) for m in mets])
        history = model.fit(x, y, epochs=3, batch_size=16, callbacks=callbacks,
                            verbose=fit_kw.get("verbose", 0),
                            shuffle=fit_kw.get("shuffle", True))
        opt = model.optimizer
        state = [np.array(opt.iterations)] + [a for s in opt._param_slots for a in s]
        out.append((model.get_weights() + state, history.history,
                    capsys.readouterr().out.splitlines()))
        if callbacks:
            assert [b for b, _ in callbacks[0].batches] == [0, 1, 2, 3, 4] * 3
            assert calls == []
        else:
            # epoch 1: one step (it builds the optimizer), a run of 2, one step (the last
            # full batch) and the partial batch; epochs 2 and 3: two runs and a step
            assert calls == [2] * 5
        calls.clear()
    (fast, fast_hist, fast_out), (slow, slow_hist, slow_out) = out
    assert fast_hist == slow_hist
    for a, b in zip(fast, slow):
        assert_bitwise(a, b, what=str(case))
    if fit_kw.get("verbose"):
        # the bar's last line: the same loss and accuracy (timings aside)
        tail = [re.sub(r".*samples/s", "", line) for line in (fast_out[-1], slow_out[-1])]
        assert tail[0] == tail[1] and "loss" in tail[0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype,optimizer", [("float32", "adam"), ("float64", "adam"),
                                             ("float32", "sgd-nesterov")])
def test_runs_of_steps_on_two_threads_are_bit_for_bit_one_thread(monkeypatch, dtype,
                                                                   optimizer, threads):
    """Layers wide enough that a run of compiled steps splits its products (by columns,
    by rows, a width of 70 cut at 32) and Adam updates between two threads: the weights,
    the optimizer state and the history equal, bit for bit, those of one compiled call per
    step, with dropout and one-hot targets, on one thread or two."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    out = []
    for callbacks in ([], [_EveryBatch()]):
        set_random_seed(3)
        model = Sequential([Flatten(input_shape=(8, 32), dtype=dtype),
                            Dense(128, activation="relu", dtype=dtype),
                            Dropout(0.2, dtype=dtype),
                            Dense(70, activation="relu", dtype=dtype),
                            Dense(K, activation="softmax", dtype=dtype)])
        model.compile(_DENSE_OPTIMIZERS.get(optimizer, lambda: optimizer)(),
                      "categorical_crossentropy", metrics=["accuracy"])
        rng = np.random.default_rng(4)
        x = rng.normal(size=(200, 8, 32)).astype(dtype)
        y = np.eye(K)[rng.integers(0, K, 200)]
        before = fastnn.get_num_threads()
        fastnn.set_num_threads(threads)
        try:
            history = model.fit(x, y, epochs=2, batch_size=32, callbacks=callbacks,
                                verbose=0)
        finally:
            fastnn.set_num_threads(before)
        opt = model.optimizer
        state = [np.array(opt.iterations)] + [a for s in opt._param_slots for a in s]
        out.append((model.get_weights() + state, history.history))
    assert out[0][1] == out[1][1]
    for a, b in zip(out[0][0], out[1][0]):
        assert_bitwise(a, b, what=f"{dtype}, {threads} threads")


def test_runs_of_steps_keep_the_products_summation_order(monkeypatch):
    """A product long enough in K for the GEMM's K-split path (K >= 8192) is split between
    the threads only where the whole would take the same path: 32 x 8200 x 1200 does
    not (38400 outputs), its halves would (19200): it stays whole, the same bits as the
    step-by-step fit."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    out = []
    for callbacks in ([], [_EveryBatch()]):
        set_random_seed(6)
        model = Sequential([Input((8200,)), Dense(1200, activation="relu"),
                            Dense(K, activation="softmax")])
        model.compile("adam", SCCE)
        rng = np.random.default_rng(7)
        x = rng.normal(size=(96, 8200)).astype(np.float32)
        y = rng.integers(0, K, 96)
        history = model.fit(x, y, epochs=2, batch_size=32, callbacks=callbacks, verbose=0)
        out.append((model.get_weights(), history.history))
    assert out[0][1] == out[1][1]
    for a, b in zip(out[0][0], out[1][0]):
        assert_bitwise(a, b, what="K = 8200")


def test_callback_lists_say_whether_a_callback_needs_every_batch():
    """fit trains step by step as soon as one callback overrides a batch hook (by its
    class, or by the instance as LambdaCallback does); the progress bar, History,
    EarlyStopping and the like do not."""
    def needs(*callbacks):
        return cbs.CallbackList(list(callbacks), add_history=True,
                                add_progbar=True).batch_hooks_each_step()

    assert not needs()
    assert not needs(cbs.EarlyStopping(), cbs.ReduceLROnPlateau(),
                     cbs.LearningRateScheduler(lambda e, lr: lr))
    assert needs(_EveryBatch())
    assert needs(cbs.LambdaCallback(on_batch_end=lambda b, logs: None))
    assert needs(cbs.LambdaCallback(on_train_batch_begin=lambda b, logs: None))
    assert not needs(cbs.LambdaCallback(on_epoch_end=lambda e, logs: None))
    assert needs(cbs.TerminateOnNaN())
    assert not needs(cbs.ModelCheckpoint("unused.keras"))           # saves per epoch
    assert needs(cbs.ModelCheckpoint("unused.keras", save_freq=3))  # counts batches


@pytest.mark.parametrize("why", ["dropout noise_shape", "dropout first", "regularizer",
                                 "frozen", "numpy backend", "sample weights",
                                 "elu hidden", "activation layer after relu",
                                 "activation layer after dropout"])
def test_models_the_dense_step_cannot_take_train_layer_by_layer(monkeypatch, why):
    """Anything the compiled step does not implement takes the layer-by-layer path, with
    the same results as when the compiled step is switched off."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    extra = [Dropout(0.3, noise_shape=(None, 1))] if why == "dropout noise_shape" else []
    hidden = ("elu",) if why == "elu hidden" else ("relu",)

    def make():
        m = _dense_model(hidden=hidden, extra=extra)
        if why == "dropout first":
            set_random_seed(5)
            m = Sequential([Flatten(input_shape=(3, 4)), Dropout(0.2), Dense(9),
                            Dense(K + 2, activation="softmax")])
        if why == "regularizer":
            set_random_seed(5)
            m = Sequential([Flatten(input_shape=(3, 4)),
                            Dense(9, activation="relu", kernel_regularizer="l2"),
                            Dense(K + 2, activation="softmax")])
        if why == "frozen":
            m.layers[1].trainable = False
        if why.startswith("activation layer"):   # (only a linear Dense's is taken)
            set_random_seed(5)
            first = [Dense(9, activation="relu"), fastnn.layers.Activation("tanh")] \
                if why.endswith("relu") else [Dense(9), Dropout(0.2),
                                              fastnn.layers.Activation("tanh")]
            m = Sequential([Flatten(input_shape=(3, 4)), *first,
                            Dense(K + 2, activation="softmax")])
        return m

    kw = {"sample_weight": np.linspace(0.5, 1.5, 70)} if why == "sample weights" else {}
    runs = []
    for compiled in (True, False):
        model = make()
        if why == "numpy backend":
            with fastnn.use_backend("numpy"):
                runs.append(_fit_dense(model, monkeypatch, compiled, **kw))
        else:
            runs.append(_fit_dense(model, monkeypatch, compiled, **kw))
        if compiled and why not in ("numpy backend", "sample weights"):
            assert model._dense_step is None, why
    assert runs[0][1] == runs[1][1]
    for a, b in zip(runs[0][0], runs[1][0]):
        assert_bitwise(a, b, what=why)


def test_dense_step_follows_replaced_weights_and_backend_changes():
    """The compiled step holds pointers into the weight arrays: rebinding one (a new array
    for a layer's kernel), switching backends or changing an activation makes it rebuild,
    never use stale memory or settings."""
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    model = _dense_model(hidden=("relu",))
    model.compile(optimizers.SGD(0.1), SCCE)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 3, 4)).astype(np.float32), rng.integers(0, K + 2, 8)
    model.train_on_batch(x, y)
    first = model._dense_step
    assert first is not None and first.valid(model)
    layer = model.layers[1]
    new = np.full_like(layer.kernel, 0.01)
    layer.kernel = layer.params["kernel"] = new
    model._prepare_training(y)
    assert not first.valid(model)
    model.train_on_batch(x, y)
    assert model._dense_step is not first and model._dense_step.valid(model)
    assert not np.all(new == np.float32(0.01))        # the new array was trained
    with fastnn.use_backend("numpy"):
        assert not model._dense_step.valid(model)
        model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    step = model._dense_step
    layer._set_activation("linear")                   # the hidden relu becomes linear
    assert not step.valid(model)
    model.train_on_batch(x, y)
    assert model._dense_step is not step and model._dense_step._c_act[0] == 0
    # Keras's Dense - Activation: the step takes the Activation layer's relu while the
    # Dense stays linear, and drops it (rebuilds) when the Dense gets an activation too
    keras = _dense_model(hidden=("relu",), act_layers=True)
    keras.compile(optimizers.SGD(0.1), SCCE)
    keras.train_on_batch(x, y)
    step = keras._dense_step
    assert step is not None and step.valid(keras) and step._c_act[0] == 1
    keras.layers[1]._set_activation("tanh")
    assert not step.valid(keras)
    keras.train_on_batch(x, y)
    assert keras._dense_step is None


def test_pop_call_and_weights_as_keras():
    """Sequential.pop removes the last layer (TypeError when none is left), model(x) is the
    batch's output in one pass, model.weights the live arrays get_weights copies."""
    x, y = make_data(20)
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model(x), model.predict(x))
    ws = model.weights
    assert len(ws) == len(model.get_weights())
    for w, c in zip(ws, model.get_weights()):
        np.testing.assert_array_equal(w, c)
    assert ws[0] is model.layers[0].params["kernel"]
    last = model.layers[-1]
    assert model.pop() is last and model.layers[-1] is not last
    assert model.output_shape == model.layers[-1].output_shape
    assert model(x).shape == (20,) + model.output_shape[1:]
    while model.layers:
        model.pop()
    with pytest.raises(TypeError, match="There are no layers in the model"):
        model.pop()
    with pytest.raises(ValueError, match="the model has no layers"):
        Sequential([Input((D,))])(x)           # (an IndexError before)


def test_call_in_training_mode_returns_its_own_array():
    """model(x, training=True) draws Dropout masks per call and returns a new array each
    time (it returned the last layer's reused work array: every Monte-Carlo sample was the
    last one); model(x) equals predict, also over several predict batches."""
    x, _ = make_data(70)
    model = mlp(dropout=0.5)
    draws = [model(x, training=True) for _ in range(3)]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    first = draws[0].copy()
    model(x * 2, training=True)
    np.testing.assert_array_equal(draws[0], first)
    np.testing.assert_array_equal(model(x), model.predict(x, batch_size=16))


def test_add_or_pop_after_compile_uses_the_new_last_layer():
    """The fused softmax + cross-entropy was decided once per compile: after add() the
    loss was still taken through the old last layer's softmax (1.26 instead of 9.68)."""
    x, y = make_data(20)
    yy = fastnn.utils.to_categorical(y, K)
    model = Sequential([Input((x.shape[1],)), Dense(K, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    model.evaluate(x, yy, verbose=0)
    model.add(Dense(K))
    want = losses.CategoricalCrossentropy()(yy, model.predict(x))
    assert model.evaluate(x, yy, verbose=0) == pytest.approx(want, rel=1e-6)
    model.pop()
    want = losses.CategoricalCrossentropy()(yy, model.predict(x))
    assert model.evaluate(x, yy, verbose=0) == pytest.approx(want, rel=1e-6)


def test_optimizer_state_for_other_weights_is_refused():
    """As Keras: after layers change, an optimizer whose slots belong to other weights is
    refused with the advice to compile again with a new one (it crashed, or applied old
    moments to new weights); one optimizer cannot train two models; after compile with a
    new optimizer the model trains."""
    x, y = make_data(40)
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0)
    model.pop()
    model.add(Dense(K, activation="softmax", name="new_head"))   # the same shapes
    with pytest.raises(ValueError, match="compile again with a new optimizer"):
        model.fit(x, y, epochs=1, verbose=0)
    opt = model.optimizer
    model.compile(opt, SCCE)                           # the same, built instance
    with pytest.raises(ValueError, match="compile again with a new optimizer"):
        model.fit(x, y, epochs=1, verbose=0)
    model.compile("adam", SCCE)
    before = [w.copy() for w in model.weights]
    model.fit(x, y, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.weights))
    other = mlp(seed=1)
    other.compile(model.optimizer, SCCE)               # another model's optimizer
    with pytest.raises(ValueError, match="trained another model"):
        other.fit(x, y, epochs=1, verbose=0)


def test_freezing_a_layer_keeps_the_optimizer_state_of_the_others():
    """As Keras: freeze a layer and compile again with the same optimizer, and it goes on
    with the remaining weights' moments and its step count: the same weights as an Adam
    that only ever saw those weights' gradients."""
    x, y = make_data(40)
    a, b = (mlp(seed=2, optimizer=optimizers.Adam(0.01)) for _ in range(2))
    for m in (a, b):
        set_random_seed(3)
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    a.layers[0].trainable = False
    a.compile(a.optimizer, SCCE)
    frozen = a.layers[0].get_weights()
    a.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    for w, f in zip(a.layers[0].get_weights(), frozen):
        assert_bitwise(w, f, what="frozen layer")
    assert a.optimizer.iterations == 10
    # the reference: the last layer's Adam state after epoch 1 continued by hand
    ref = optimizers.Adam(0.01)
    state = b.optimizer.get_state()
    n = len(b.trainable_params)
    keep = [n - 2, n - 1]                              # the last layer's kernel and bias
    ref.set_state([state[0]] + [state[1 + k * n + i] for k in range(2) for i in keep])
    b.layers[0].trainable = False
    b.compile(ref, SCCE)
    b.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert_same_weights(a, b, "frozen first layer, same vs hand-restored optimizer")


def test_frozen_after_building_then_saved_trains_on_after_loading(tmp_path):
    """Train, freeze a layer, save (no fit in between: the optimizer holds state for the
    frozen weights too), load: the loaded model trains on as the original does (the file
    names the weight each slot belongs to; it was refused with "the optimizer was built
    for parameters of shapes ...")."""
    x, y = make_data(40)
    model = mlp(seed=2, optimizer=optimizers.Adam(0.01))
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    model.layers[0].trainable = False
    model.save(tmp_path / "m.fnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fnn")
    loaded.layers[0].trainable = False
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert_same_weights(model, loaded, "frozen, saved, loaded, trained")
    assert loaded.optimizer.iterations == model.optimizer.iterations == 10


def test_popped_after_training_then_saved_loads_and_trains_on(tmp_path):
    """Train, pop the last layer, save: the file holds the optimizer state of the weights
    left only (it held the popped layer's slots too and load_model refused it: "the
    optimizer state holds 9 arrays, more than the 5 ..."), and the loaded model trains on
    as the original does. With a layer added after the pop, both refuse to train alike."""
    x, y = make_data(40)
    model = mlp(seed=4, optimizer=optimizers.Adam(0.01))
    model.add(Dense(K, activation="softmax"))
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    model.pop()
    model.save(tmp_path / "m.fnn")
    loaded = fastnn.models.load_model(tmp_path / "m.fnn")
    assert len(loaded.optimizer.get_state()) == 1 + 2 * 4      # step, m and v of 4 weights
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert_same_weights(model, loaded, "popped, saved, loaded, trained")
    assert loaded.optimizer.iterations == model.optimizer.iterations == 10
    model.add(Dense(K, activation="softmax"))
    model.save(tmp_path / "m2.fnn")
    loaded = fastnn.models.load_model(tmp_path / "m2.fnn")
    for m in (model, loaded):
        with pytest.raises(ValueError, match="compile again"):
            m.fit(x, y, epochs=1, verbose=0)


def test_verbose_accepts_bools_and_auto(capsys):
    """verbose=False / True are 0 / 1 (Python's and Keras's comparison), "auto" is 1; a
    float or another value is refused, in fit, evaluate and predict alike."""
    x, y = make_data(16)
    model = mlp()
    model.fit(x, y, epochs=1, verbose=False)
    model.evaluate(x, y, verbose=False)
    model.predict(x, verbose=False)
    assert capsys.readouterr().out == ""
    model.evaluate(x, y, verbose=True)
    model.predict(x, verbose="auto")
    assert capsys.readouterr().out.count("1/1 [=") == 2
    for call in (lambda: model.evaluate(x, y, verbose=1.0), lambda: model.predict(x, verbose=3),
                 lambda: model.fit(x, y, verbose="yes")):
        with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'"):
            call()


def test_to_categorical_shapes_as_keras():
    """keras.utils.to_categorical: y.shape (without a trailing axis of 1) + (classes,);
    (N, T) sequence labels were flattened to (N*T, C)."""
    tc = fastnn.utils.to_categorical
    assert tc([0, 2, 1]).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert tc(np.zeros((2, 3), int)).shape == (2, 3, 1)
    assert tc(np.array([[0, 1, 2], [2, 1, 0]])).shape == (2, 3, 3)
    np.testing.assert_array_equal(tc(np.array([[0, 1, 2], [2, 1, 0]]))[1, 0], [0, 0, 1])
    assert tc(np.zeros((2, 1, 1), int)).shape == (2, 1, 1)
    assert tc(np.zeros((4, 1), int), 3).shape == (4, 3)
    assert tc(np.array(3)).shape == (4,)
    assert tc([0, 1], num_classes=0).shape == (2, 2)          # 0 means infer, as Keras
    assert tc([], num_classes=3).shape == (0, 3)
    for bad in (2.5, "3", True):
        with pytest.raises(TypeError, match="num_classes must be a non-negative int"):
            tc([0, 1], num_classes=bad)
    with pytest.raises(ValueError, match="labels >= 0"):
        tc([0, -1])
    with pytest.raises(ValueError, match="too small for label 3"):
        tc([0, 3], num_classes=2)
    # labels past int64's range named as given (the cast to int64 wrapped them first:
    # "labels >= 0, received a minimum of -9223372036854775803", with a NumPy warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="the label 9223372036854775813, too large"):
            tc(np.array([0, 2**63 + 5], np.uint64))
        with pytest.raises(ValueError, match=r"the label 1e\+20, too large"):
            tc([0.0, 1e20])
        with pytest.raises(ValueError, match=r"labels >= 0, received a minimum of -1e\+20"):
            tc([0.0, -1e20])


def test_saved_files_get_the_usual_mode(tmp_path):
    """save / save_weights create files with the mode open() gives (0666 & ~umask), not
    mkstemp's private 0600: a serving process must be able to read a checkpoint."""
    old = os.umask(0o022)
    try:
        model = mlp()
        model.save(tmp_path / "m.fastnn")
        model.save_weights(tmp_path / "w.fastnn")
        for name in ("m.fastnn", "w.fastnn"):
            assert (os.stat(tmp_path / name).st_mode & 0o777) == 0o644, name
    finally:
        os.umask(old)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.save(str(tmp_path / "newdir") + os.sep)


def test_failed_load_weights_changes_nothing(tmp_path):
    """Every shape is checked before any weight is written: a mismatch in the last layer
    used to leave the first layers overwritten."""
    a = Sequential([Dense(8, input_dim=D), Dense(K)])
    a.save_weights(tmp_path / "a.w")
    b = Sequential([Dense(8, input_dim=D), Dense(K + 1)])
    before = b.get_weights()
    with pytest.raises(ValueError, match=r"weight 'kernel' of layer .* has shape \(8, 4\), "
                                         r"received \(8, 3\); no weight was set"):
        b.load_weights(tmp_path / "a.w")
    for w, v in zip(b.get_weights(), before):
        assert_bitwise(w, v, what="weights after a failed load")


def test_load_model_on_a_weights_file_says_so(tmp_path):
    model = mlp()
    model.save_weights(tmp_path / "w.fastnn")
    with pytest.raises(ValueError, match=r"it holds weights only \(save_weights\): build the "
                                         r"model and call model.load_weights\(path\)"):
        load_model(tmp_path / "w.fastnn")


@pytest.mark.parametrize("conv_df,pool_df,filters", [
    ("channels_last", "channels_first", 4), ("channels_last", "channels_first", 5),
    ("channels_first", "channels_last", 4), ("channels_first", "channels_first", 4),
    ("channels_last", "channels_last", 4)])
def test_relu_pool_pairing_follows_the_channel_axes(conv_df, pool_df, filters):
    """fit's paired relu + pooling backward sums the bias gradient over the pooling's
    channel axis: with the layers' data formats mixed it gave another bias gradient (or a
    broadcast error). fit's gradients are the layers' own, called one by one."""
    rng = np.random.default_rng(0)
    shape = (4, 6, 3) if conv_df == "channels_last" else (3, 4, 6)
    x = rng.standard_normal((8,) + shape)
    y = rng.integers(0, 2, 8)

    def make():
        set_random_seed(1)
        return Sequential([Input(shape), Conv2D(filters, 1, activation="relu", dtype="float64",
                                                data_format=conv_df, bias_initializer="ones"),
                           MaxPooling2D(data_format=pool_df, dtype="float64"),
                           Flatten(dtype="float64"), Dense(2, activation="softmax",
                                                           dtype="float64")])
    model = make()
    model.compile(optimizers.SGD(learning_rate=0.0), SCCE)
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    ref = make()
    out = x
    for layer in ref.layers:
        out = layer.forward(out, training=True)
    grad = losses.SparseCategoricalCrossentropy().value_and_gradient(y, out)[1]
    for layer in reversed(ref.layers):
        grad = layer.backward(grad)
    for (name, g), (_, r) in zip(model.layers[0].grads.items(), ref.layers[0].grads.items()):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12, err_msg=name)


def test_empty_data_is_refused_before_any_step():
    """No samples: fit, evaluate, train_on_batch, test_on_batch and validation_data raise a
    ValueError naming the call and the argument, before any update (train_on_batch moved
    the weights by Adam's moments and counted a step; evaluate reported a loss of 0;
    fit returned {} after running every callback). predict gives an empty result."""
    x, y = make_data(20)
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0)
    before = [w.copy() for w in model.weights]
    steps = model.optimizer.iterations
    for call, where in ((lambda: model.train_on_batch(x[:0], y[:0]), "train_on_batch"),
                        (lambda: model.evaluate(x[:0], y[:0]), "evaluate"),
                        (lambda: model.test_on_batch(x[:0], y[:0]), "evaluate"),
                        (lambda: model.fit(x[:0], y[:0], verbose=0), "fit: x"),
                        (lambda: model.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0),
                         "validation_data\\[0\\] has no samples")):
        with pytest.raises(ValueError, match=f"{where}.*no samples|{where}"):
            call()
    for w, b in zip(model.weights, before):
        assert_bitwise(w, b, what="weights after refused calls")
    assert model.optimizer.iterations == steps
    assert model.predict(x[:0]).shape == (0,) + model.layers[-1].output_shape[1:]


def test_validation_data_errors_name_it():
    """validation_data's parts are named as such in errors (they said "x"), and a ragged
    list names its argument."""
    x, y = make_data(20)
    model = mlp()
    with pytest.raises(ValueError, match="received validation_data\\[0\\] with shape"):
        model.fit(x, y, validation_data=(x[:, :-1], y), verbose=0)
    with pytest.raises(TypeError, match="validation_data\\[0\\] must be a numpy array"):
        model.fit(x, y, validation_data=(None, None), verbose=0)
    with pytest.raises(ValueError, match="validation_data\\[1\\] must have the same|"
                                         "validation_data\\[0\\] and validation_data\\[1\\]"):
        model.fit(x, y, validation_data=(x, y[:-1]), verbose=0)
    with pytest.raises(ValueError, match="x cannot be read as an array"):
        model.fit([[1.0, 2.0], [3.0]], y[:2], verbose=0)


def test_model_trainable_freezes_every_layer():
    """model.trainable = False freezes every layer, as in Keras (it was a plain attribute:
    fit went on changing the weights); True makes them trainable again."""
    x, y = make_data(20)
    model = mlp(batchnorm=True)
    model.fit(x, y, epochs=1, verbose=0)
    model.trainable = False
    assert not model.trainable and not any(l.trainable for l in model.layers)
    assert model.trainable_weights == [] and \
        len(model.non_trainable_weights) == len(model.weights)
    before = [w.copy() for w in model.get_weights()
              if not any(w is s for l in model.layers for s in l.state.values())]
    params_before = [p.copy() for l in model.layers for p in l.params.values()]
    model.fit(x, y, epochs=1, verbose=0)
    for p, b in zip([p for l in model.layers for p in l.params.values()], params_before):
        assert_bitwise(p, b, what="frozen model's parameters")
    assert before
    model.trainable = True
    assert all(l.trainable for l in model.layers)
    n_params = sum(len(l.params) for l in model.layers)
    assert len(model.trainable_weights) == n_params
    assert len(model.non_trainable_weights) == len(model.weights) - n_params
    with pytest.raises(TypeError, match="trainable must be a bool"):
        model.trainable = "no"


def test_build_checks_and_a_failed_build_keeps_the_model():
    """A build that fails (another input shape) leaves the model usable with its shape (it
    kept the new shape: every predict then failed); layers of different dtypes are a
    ValueError naming them at build (a TypeError deep in a kernel at the first predict);
    Sequential(layer) says to pass a list."""
    model = Sequential([Dense(4), Dense(3)])
    model.build((None, 5))
    with pytest.raises(ValueError, match="was built for input shape"):
        model.build((None, 6))
    assert model.predict(np.ones((2, 5), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match="one dtype.*float32.*float64"):
        Sequential([Dense(3, input_shape=(5,)), Dense(3, dtype="float64")])
    # layers without weights take the weighted layers' dtype: a Flatten or Dropout of the
    # default dtype in a float64 model (Flatten first failed in a kernel at predict)
    for first in (Flatten(input_shape=(5,)), Flatten(input_shape=(5,), dtype="float64")):
        ok = Sequential([first, Dropout(0.5), Dense(3, dtype="float64")])
        assert ok.predict(np.ones((2, 5)), verbose=0).dtype == np.float64
        ok.compile("sgd", "mse")
        ok.fit(np.ones((4, 5)), np.ones((4, 3)), verbose=0)
    with pytest.raises(TypeError, match="list of Layer"):
        Sequential(Dense(3))


def test_fit_validation_freq_and_batch_size():
    """Keras 3's validation_freq (every n-th epoch, or the epochs listed, counted from 1)
    and validation_batch_size (the same values: the metrics sum over the whole set);
    initial_epoch checked (a float or a negative value ran on unchecked)."""
    x, y = make_data(40)
    model = mlp(seed=4)
    h = model.fit(x, y, epochs=4, validation_data=(x[:10], y[:10]), validation_freq=2,
                  verbose=0)
    assert len(h.history["loss"]) == 4 and len(h.history["val_loss"]) == 2
    h = model.fit(x, y, epochs=3, validation_split=0.25, validation_freq=[1, 3], verbose=0)
    assert len(h.history["val_loss"]) == 2
    a, b = mlp(seed=5), mlp(seed=5)
    ha = a.fit(x, y, epochs=1, shuffle=False, validation_data=(x, y), verbose=0)
    hb = b.fit(x, y, epochs=1, shuffle=False, validation_data=(x, y),
               validation_batch_size=7, verbose=0)
    assert hb.history["val_loss"][0] == pytest.approx(ha.history["val_loss"][0], rel=1e-5)
    for kw, name in ((dict(validation_freq=0), "validation_freq"),
                     (dict(validation_freq=[1, 0]), "validation_freq\\[1\\]"),
                     (dict(validation_batch_size=0), "validation_batch_size"),
                     (dict(initial_epoch=1.0), "initial_epoch"),
                     (dict(initial_epoch=-2), "initial_epoch")):
        with pytest.raises(ValueError, match=name):
            model.fit(x, y, epochs=1, validation_data=(x, y), verbose=0, **kw)


def test_repeated_metric_names_and_set_weights_all_or_nothing():
    """A metric given twice gets Keras's name_1 (results were keyed by name: evaluate
    returned 3 values for 4 compiled entries); set_weights with an array that cannot be
    a weight writes none (the first layers were overwritten before the error)."""
    x, y = make_data(20)
    model = mlp(metrics_=("accuracy", "accuracy"))
    res = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(res) == ["loss", "accuracy", "accuracy_1"]
    assert res["accuracy"] == res["accuracy_1"]
    assert len(model.evaluate(x, y, verbose=0)) == 3
    h = model.fit(x, y, epochs=1, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "accuracy_1"}
    before = [w.copy() for w in model.get_weights()]
    bad = [w.copy() for w in before]
    bad[-1] = np.array(["a"] * before[-1].size).reshape(before[-1].shape)
    for w in bad[:-1]:
        w += 1
    with pytest.raises(TypeError, match="no weight was set"):
        model.set_weights(bad)
    for w, b in zip(model.get_weights(), before):
        assert_bitwise(w, b, what="weights after a refused set_weights")


def test_compile_takes_keras_3_keywords():
    """Keras 3's compile keywords: run_eagerly, steps_per_execution, jit_compile and
    auto_scale_loss accepted (checked, no effect: they were a TypeError); loss_weights
    and weighted_metrics only as None."""
    x, y = make_data(16)
    model = mlp()
    model.compile("adam", SCCE, ["accuracy"], run_eagerly=True, steps_per_execution=4,
                  jit_compile=False, auto_scale_loss=True, loss_weights=None)
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="loss_weights"):
        model.compile("adam", SCCE, loss_weights=[1.0])
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.compile("adam", SCCE, steps_per_execution=0)
    with pytest.raises(ValueError, match="jit_compile"):
        model.compile("adam", SCCE, jit_compile="xla")


def test_verbose_defaults_are_keras_auto(capsys):
    """fit, evaluate and predict default to verbose="auto" (a progress bar), as in Keras 3;
    predict defaulted to 0."""
    x, y = make_data(16)
    model = mlp()
    model.fit(x, y, epochs=1)
    model.evaluate(x, y)
    model.predict(x)
    assert capsys.readouterr().out.count("1/1 [=") == 3


def test_from_config_checks_as_add_does():
    """Sequential.from_config adds its layers as add() does: a first layer with an
    input_shape builds the model, and two layers of one name are refused (it appended
    them unchecked: an unbuilt model, duplicate names)."""
    cfg = Sequential([Dense(4, input_shape=(5,)), Dense(2)]).get_config()
    cfg.pop("input_shape", None)
    model = Sequential.from_config(cfg)
    assert model.built and model.predict(np.ones((1, 5), np.float32), verbose=0).shape == (1, 2)
    cfg["layers"][1]["config"]["name"] = cfg["layers"][0]["config"]["name"]
    with pytest.raises(ValueError, match="already in the model"):
        Sequential.from_config(cfg)


def test_get_layer_by_name_or_index():
    """Keras's get_layer(name=None, index=None)."""
    model = Sequential([Dense(4, input_shape=(5,), name="hidden"), Dense(2, name="out")])
    assert model.get_layer("hidden") is model.layers[0]
    assert model.get_layer(index=-1) is model.layers[1]
    for kw, msg in ((dict(), "exactly one"), (dict(name="out", index=0), "exactly one"),
                    (dict(name="nope"), "no layer named 'nope'"), (dict(index=2), "index")):
        with pytest.raises(ValueError, match=msg):
            model.get_layer(**kw)


# ----------------------------------------------------------------------------- hostile files
def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.fixture
def zip_bytes_read(monkeypatch):
    """The number of decompressed bytes read from zip members during the test."""
    count = [0]
    for method in ("read", "read1"):
        real = getattr(zipfile.ZipExtFile, method)

        def counting(self, *args, _real=real):
            data = _real(self, *args)
            count[0] += len(data)
            return data

        monkeypatch.setattr(zipfile.ZipExtFile, method, counting)
    return count


def test_loading_reads_no_member_beyond_what_the_model_holds(tmp_path, zip_bytes_read):
    """Members no one uses (an unknown file, a weight array beyond the model's) are never
    read: every .npy member was read in full (a 1 MB file holding a 1 GiB member of zeros
    used 2.1 GB before the error)."""
    model, good = _saved_model(tmp_path)

    def with_extra(path, name, data):
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w",
                                                           zipfile.ZIP_DEFLATED) as zout:
            for member in zin.namelist():
                zout.writestr(member, zin.read(member))
            zout.writestr(name, data)
        assert path.stat().st_size < 100_000
        return path

    extra_member = with_extra(tmp_path / "extra_member.fastnn", "notes.bin", bytes(8 << 20))
    extra_weight = with_extra(tmp_path / "extra_weight.fastnn",       # 8 MiB of zeros
                              f"weights/{len(model.weights)}.npy",
                              _npy(np.zeros(2 << 20, np.float32)))
    zip_bytes_read[0] = 0
    assert_same_weights(load_model(extra_member), model)           # an unknown member: unread
    mlp(seed=3).load_weights(extra_member)
    assert zip_bytes_read[0] < 100_000, zip_bytes_read[0]
    for load in (load_model, mlp(seed=3).load_weights):
        with pytest.raises(ValueError, match=rf"has {len(model.weights)} weight arrays, "
                                             rf"received {len(model.weights) + 1}") as info:
            load(extra_weight)
        assert str(extra_weight) in str(info.value)
    assert zip_bytes_read[0] < 200_000, zip_bytes_read[0]


def _with_member(good, bad, name, data):
    _rezip(good, bad, replace={name: data})


@pytest.mark.parametrize("name, data, phrase", [
    # a header declaring 400 GB (MemoryError before)
    ("weights/0.npy", _npy(np.zeros(1, np.float32)).replace(b"(1,)", b"(100000000000,)"),
     "declares shape (100000000000,)"),
    # JSON nested beyond any description (RecursionError before)
    ("meta.json", "[" * 100000 + "]" * 100000, "RecursionError"),
    # a member name no fastnn writes (load_weights: a bare int() error before)
    ("weights/x.npy", _npy(np.zeros(3, np.float32)), "unexpected member 'weights/x.npy'"),
    # a weight of a shape the model does not have: refused before it is read
    ("weights/0.npy", _npy(np.zeros((3, 3), np.float32)), "has shape (6, 8), received (3, 3)"),
    ("optimizer/1.npy", _npy(np.zeros((100, 100), np.float32)), "shape (100, 100)"),
], ids=["huge-header", "nested-meta", "bad-member-name", "wrong-shape", "state-shape"])
def test_hostile_members_are_clear_errors_naming_the_file(tmp_path, name, data, phrase):
    _, good = _saved_model(tmp_path)
    bad = tmp_path / "bad.fastnn"
    _with_member(good, bad, name, data)
    loads = [load_model]
    if not name.startswith("optimizer/"):                 # load_weights reads no state
        loads.append(mlp(seed=3).load_weights)
    for load in loads:
        with pytest.raises(ValueError) as info:
            load(bad)
        msg = str(info.value)
        assert str(bad) in msg and phrase in msg, msg
        assert "fastnn model" in msg or "do not fit the model" in msg, msg


def test_save_writes_through_symlinks_and_refuses_special_files(tmp_path):
    """A symbolic link is written through, as Keras (open()) does: it stayed a link to an
    old file while a regular file replaced it. A FIFO is refused, not replaced."""
    model = mlp(seed=1)
    real = tmp_path / "models" / "real.fastnn"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "link.fastnn"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.fastnn"
    dangling.symlink_to(tmp_path / "models" / "new.fastnn")
    for save in (model.save, model.save_weights):
        save(link)
        assert link.is_symlink() and os.readlink(link) == str(real)
        other = mlp(seed=2)
        other.load_weights(real)
        assert_same_weights(other, model)
        save(dangling)
        assert dangling.is_symlink() and (tmp_path / "models" / "new.fastnn").is_file()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for save in (model.save, model.save_weights):
        with pytest.raises(ValueError, match="is a FIFO") as info:
            save(fifo)
        assert str(fifo) in str(info.value) and "filepath" in str(info.value)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert tmp_leftovers(tmp_path) == [] and tmp_leftovers(real.parent) == []


def test_save_overwrite_and_load_model_flags_as_keras_3(tmp_path):
    """save / save_weights take Keras 3's overwrite (False: FileExistsError where Keras
    prompts); load_model takes compile and safe_mode, both checked bools (compile="no"
    was taken as True)."""
    model = mlp(seed=1)
    path = tmp_path / "m.fastnn"
    for save in (model.save, model.save_weights):
        path.write_bytes(b"keep")
        with pytest.raises(FileExistsError, match="overwrite=False") as info:
            save(path, overwrite=False)
        assert str(path) in str(info.value) and path.read_bytes() == b"keep"
        path.unlink()
        save(path, overwrite=False)
        save(path, overwrite=np.True_)
        with pytest.raises(TypeError, match="`overwrite` must be a bool"):
            save(path, overwrite="no")
    model.save(path)
    for kw in ({"compile": "no"}, {"compile": 1}, {"safe_mode": None}, {"safe_mode": "x"}):
        with pytest.raises(TypeError, match=f"`{next(iter(kw))}` must be a bool"):
            load_model(path, **kw)
    assert load_model(path, safe_mode=False).optimizer is not None
    assert load_model(path, compile=np.False_).optimizer is None
    params = list(inspect.signature(load_model).parameters)
    assert params == ["filepath", "custom_objects", "compile", "safe_mode"]
    assert list(inspect.signature(Sequential.save).parameters)[1:] == ["filepath", "overwrite"]


def test_bytes_paths_and_path_types(tmp_path):
    """Paths as bytes work everywhere (load_model and load_weights raised AttributeError,
    save a confusing TypeError); anything else is a TypeError naming filepath."""
    model = mlp(seed=1)
    m, w = os.fsencode(tmp_path / "m.fastnn"), os.fsencode(tmp_path / "w.fastnn")
    model.save(m)
    model.save_weights(w)
    assert_same_weights(load_model(m), model)
    other = mlp(seed=2)
    other.load_weights(w)
    assert_same_weights(other, model)
    for call in (lambda: model.save(3), lambda: model.save_weights(3),
                 lambda: load_model(3), lambda: model.load_weights(3)):
        with pytest.raises(TypeError, match="filepath must be a str, bytes or os.PathLike, "
                                            "received int"):
            call()


def _fit_twice(make_callbacks, loss=SCCE, metric_list=("accuracy",), epochs=3, dropout=None):
    """Train the same model on the same data with ``make_callbacks()`` alone and with an
    _EveryBatch beside them (one step per call): (weights + optimizer state, history) of
    each."""
    out = []
    for every in (False, True):
        model = _dense_model(dropout=dropout)
        model.compile(optimizers.Adam(0.01), loss, metrics=list(metric_list))
        rng = np.random.default_rng(2)
        x = rng.normal(size=(70, 3, 4)).astype(np.float32)
        y = rng.integers(0, K + 2, 70)
        callbacks = make_callbacks() + ([_EveryBatch()] if every else [])
        history = model.fit(x, y, epochs=epochs, batch_size=8, callbacks=callbacks,
                            verbose=0)
        opt = model.optimizer
        out.append((model.get_weights() + [np.array(opt.iterations)]
                    + [a for s in opt._param_slots for a in s], history.history))
    return out


class _StopAtEpoch(cbs.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_runs_of_steps_found_by_review(monkeypatch, tmp_path):
    """Found by a review of fit's compiled runs, each failing before:
    - a stop asked before a batch (on_epoch_begin) trains one batch, as step by step; the
      run path trained a whole run (17 iterations instead of 10);
    - a subclass of ProgbarLogger that overrides a batch hook inherited the permission to
      be called once per run, and saw batches 0, 7, 8, 7, 8 ...;
    - a ModelCheckpoint whose save_freq became an int after construction kept the
      per-epoch permission, and saved at the wrong batches;
    - a metric subclass overriding update_state inherited ``_counts`` and was updated once
      per run."""
    calls = run_steps_calls(monkeypatch, rows=64)             # runs of 8 batches of 8
    fast, slow = _fit_twice(lambda: [_StopAtEpoch(1)])
    assert fast[1] == slow[1]
    for a, b in zip(fast[0], slow[0]):
        assert_bitwise(a, b, what="stop at epoch begin")
    assert calls                                 # the first epoch did run compiled
    calls.clear()

    class Bar(cbs.ProgbarLogger):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)
            super().on_train_batch_end(batch, logs)

    bar = Bar()
    _fit_twice(lambda: [bar], epochs=1)
    assert bar.batches[:9] == list(range(9)) and calls == []

    ck = cbs.ModelCheckpoint(os.fspath(tmp_path / "m.fnn"), monitor="loss",
                             save_freq="epoch")
    ck.save_freq = 3                                     # 9 batches: saves after 3, 6, 9
    model = _dense_model()
    model.compile("adam", SCCE)
    model.fit(np.zeros((70, 3, 4), np.float32), np.zeros(70, np.int64), epochs=1,
              batch_size=8, callbacks=[ck], verbose=0)
    assert calls == [] and ck._batches_seen_since_last_saving == 0

    class Counted(metrics.SparseCategoricalAccuracy):
        def update_state(self, y_true, y_pred, sample_weight=None):
            self.updates = getattr(self, "updates", 0) + 1
            super().update_state(y_true, y_pred, sample_weight)

    m = Counted()
    model = _dense_model()
    model.compile("adam", SCCE, metrics=[m])
    model.fit(np.zeros((64, 3, 4), np.float32), np.zeros(64, np.int64), epochs=1,
              batch_size=8, verbose=0)
    assert m.updates == 8 and calls == []


def test_loss_subclass_is_not_fused(monkeypatch):
    """A user's subclass of a cross-entropy loss computes through its own methods: it took
    the fused softmax step and the compiled Dense step, which skip them (a logits_step
    tripling the loss trained as the plain loss)."""
    class Scaled(losses.SparseCategoricalCrossentropy):
        def logits_step(self, y_true, z, sw=None):
            loss, grad, p = super().logits_step(y_true, z, sw)
            return 3 * loss, 3 * grad, p

        def value_and_gradient(self, y_true, y_pred, sample_weight=None):
            loss, grad = super().value_and_gradient(y_true, y_pred, sample_weight)
            return 3 * loss, 3 * grad

    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3, 4)).astype(np.float32)
    y = rng.integers(0, K + 2, 40)
    out = []
    for loss in (Scaled(), SCCE):
        model = _dense_model()
        model.compile(optimizers.SGD(1e-6), loss)      # (the weights barely move)
        out.append(model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
                   .history["loss"][0])
        if loss != SCCE:
            assert model._fused_output() == (None, None) and model._dense_step is None
    assert out[0] == pytest.approx(3 * out[1], rel=1e-4)


def test_runs_of_steps_cap_their_dropout_masks(monkeypatch):
    """A run draws all its dropout masks up front: runs are cut so they stay within
    Sequential._RUN_MASK_BYTES (two Dropout layers after Dense(1024) took 68 MB a run)."""
    calls = run_steps_calls(monkeypatch, rows=8192)
    monkeypatch.setattr(Sequential, "_RUN_MASK_BYTES", 9 * 2 * 4 * 24)   # 24 rows
    model = _dense_model(dropout=0.2)
    model.compile("adam", SCCE)
    model.fit(np.ones((100, 3, 4), np.float32), np.zeros(100, np.int64), epochs=1,
              batch_size=8, verbose=0, shuffle=False)
    assert calls and max(calls) == 3


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix's own
def test_fit_reads_matrix_subclasses_as_plain_arrays_and_refuses_masks():
    """np.matrix reached the layers unconverted in fit and train_on_batch: with a Dropout
    first layer x * mask was a matrix product (a loss of 4.99 for 1.85; found by a review).
    Subclasses are read as plain arrays now, and masked x, y or sample_weight are a
    TypeError naming them in fit, evaluate and predict (predict and evaluate dropped the
    mask, fit failed deep in a kernel)."""
    x = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    y = np.arange(8) % 3
    losses_ = []
    for xx in (x, np.matrix(x)):
        set_random_seed(0)
        model = Sequential([Dropout(0.5, input_shape=(8,)), Dense(3, activation="softmax")])
        model.compile("sgd", SCCE)
        losses_.append(model.train_on_batch(xx, y))
        losses_.append(model.fit(xx, y, batch_size=4, verbose=0).history["loss"][0])
    assert losses_[:2] == losses_[2:]
    masked = np.ma.masked_array
    for call, name in ((lambda: model.fit(masked(x), y, verbose=0), "x"),
                       (lambda: model.predict(masked(x), verbose=0), "x"),
                       (lambda: model.evaluate(x, masked(y), verbose=0), "y"),
                       (lambda: model.fit(x, y, sample_weight=masked(np.ones(8)), verbose=0),
                        "sample_weight")):
        with pytest.raises(TypeError, match=f"{name} is a masked array"):
            call()


def test_global_max_pooling_model_trains_saves_and_loads(tmp_path):
    """A Conv2D -> GlobalMaxPooling2D -> Dense model fits, and load_model gives back the
    same predictions."""
    set_random_seed(1)
    model = Sequential([Input(shape=(6, 6, 2)), Conv2D(4, 3, activation="relu"),
                        fastnn.layers.GlobalMaxPooling2D(), Dense(K, activation="softmax")])
    model.compile("adam", SCCE, metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, K, 16)
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0)[0] < before
    path = os.fspath(tmp_path / "gmp.fnn")
    model.save(path)
    np.testing.assert_array_equal(load_model(path).predict(x, verbose=0),
                                  model.predict(x, verbose=0))


def test_ema_model_saves_loads_and_trains_on(tmp_path):
    """An optimizer with use_ema saved with its model (config and averages) trains on after
    load_model bit for bit as the original; freezing a layer keeps the averages of the
    weights left, as their slots."""
    set_random_seed(2)
    model = Sequential([Input(shape=(4,)), Dense(5, activation="relu"),
                        Dense(K, activation="softmax")])
    model.compile(optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9,
                                  ema_overwrite_frequency=4), SCCE)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.integers(0, K, 40)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    path = os.fspath(tmp_path / "ema.fnn")
    model.save(path)
    loaded = load_model(path)
    assert loaded.optimizer.use_ema and loaded.optimizer.ema_overwrite_frequency == 4
    for m in (model, loaded):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights() + model.optimizer.get_state(),
                    loaded.get_weights() + loaded.optimizer.get_state()):
        assert_bitwise(a, b, what="ema after load")
    model.layers[0].trainable = False
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    assert len(model.optimizer.get_state()) == 1 + 3 * 2    # m, v, average of layer 2's


def test_per_run_permission_set_on_the_instance():
    """A callback may grant _batch_hooks_per_run on the instance (ModelCheckpoint did until
    today): fit raised 'generator raised StopIteration' looking for the class that
    granted it (found by a review). The instance's class's hooks have it."""
    class Mine(cbs.Callback):
        def __init__(self):
            super().__init__()
            self._batch_hooks_per_run = True
            self.ends = 0

        def on_train_batch_end(self, batch, logs=None):
            self.ends += 1

    model = _dense_model()
    model.compile("adam", SCCE)
    mine = Mine()
    model.fit(np.zeros((64, 3, 4), np.float32), np.zeros(64, np.int64), epochs=1,
              batch_size=8, callbacks=[mine], verbose=0)
    assert 1 <= mine.ends <= 8


def test_grouped_conv_model_trains_saves_and_loads(tmp_path):
    """A Conv2D(groups=2, relu) before a 2x2 MaxPooling2D (a pair Sequential otherwise
    fuses: not with groups) trains, and load_model gives back the same predictions."""
    set_random_seed(3)
    model = Sequential([Input(shape=(8, 8, 4)), Conv2D(6, 3, groups=2, activation="relu"),
                        MaxPooling2D(), Flatten(), Dense(K, activation="softmax")])
    model.compile("adam", SCCE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 4)).astype(np.float32)
    y = rng.integers(0, K, 16)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    path = os.fspath(tmp_path / "groups.fnn")
    model.save(path)
    np.testing.assert_array_equal(load_model(path).predict(x, verbose=0),
                                  model.predict(x, verbose=0))


# ------------------------------------------------- review fixes: files, shuffle, callbacks
class _NamedLoss(losses.Loss):
    """A user's loss with its own name (Keras users key custom_objects by it)."""
    name = "named_mse"

    def per_sample(self, y_true, y_pred):
        return np.mean((y_pred - y_true) ** 2, axis=-1)

    def per_sample_grad(self, y_true, y_pred):
        return 2 * (y_pred - y_true) / y_true.shape[-1]


def test_custom_loss_found_by_its_name_or_class(tmp_path):
    model = Sequential([Dense(K, input_shape=(D,))])
    model.compile("sgd", _NamedLoss())
    path = tmp_path / "named.fnn"
    model.save(path)
    for key in ("_NamedLoss", "named_mse"):
        assert type(load_model(path, custom_objects={key: _NamedLoss}).loss) is _NamedLoss
    with pytest.raises(ValueError, match=r"Unknown loss class '_NamedLoss'.*custom_objects"):
        load_model(path)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_save_over_a_file_keeps_its_mode(tmp_path):
    """A save replacing a file gives the new file the old one's mode, as writing it in
    place would (a private 0600 file became 0644)."""
    model = mlp()
    path = tmp_path / "m.fnn"
    model.save(path)
    os.chmod(path, 0o600)
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    model.save_weights(tmp_path / "m.weights.fnn")
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_home_directory_paths_are_expanded(tmp_path, monkeypatch):
    """"~/m.fnn" is written in the home directory (it made a directory named "~" in the
    working directory); an unknown ~user is a ValueError naming the argument."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    model = mlp()
    model.save("~/m.fnn")
    assert (tmp_path / "home" / "m.fnn").is_file() and not (tmp_path / "~").exists()
    assert load_model("~/m.fnn").count_params() == model.count_params()
    with pytest.raises(ValueError, match="filepath: cannot expand the home directory"):
        model.save("~no_such_user_for_fastnn/m.fnn")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_load_from_a_fifo_is_refused(tmp_path):
    """Loading from a FIFO waited forever inside zipfile."""
    fifo = tmp_path / "pipe.fnn"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        load_model(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        mlp().load_weights(fifo)


def test_damaged_zip_headers_give_value_errors(tmp_path):
    """A central-directory header declaring an unknown compression method or encryption
    made zipfile raise NotImplementedError / RuntimeError, not the documented ValueError."""
    path = tmp_path / "good.fnn"
    mlp().save(path)
    good = bytearray(path.read_bytes())
    at = good.find(b"PK\x01\x02")
    for offset, value in ((10, 99), (8, good[at + 8] | 1)):   # method; flags: encrypted
        bad = bytearray(good)
        bad[at + offset] = value
        (tmp_path / "bad.fnn").write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="not a readable fastnn model file"):
            load_model(tmp_path / "bad.fnn")


def test_shuffle_batch_keeps_the_batches():
    """shuffle="batch" (Keras 3) shuffles inside each batch only: plain SGD ends where the
    unshuffled run does, to round-off, and not where a full shuffle does; other values than
    bools and "batch" are refused."""
    x, y = make_data(40)
    finals = {}
    for shuffle in (False, "batch", True):
        model = mlp(optimizer=optimizers.SGD(0.1), metrics_=())
        model.fit(x, y, epochs=3, batch_size=8, shuffle=shuffle, verbose=0)
        finals[shuffle] = model.get_weights()[0]
    np.testing.assert_allclose(finals["batch"], finals[False], rtol=1e-5, atol=1e-6)
    assert not np.allclose(finals[True], finals[False], rtol=1e-3)
    for bad in ("no", "Batch", 2, None):
        with pytest.raises(ValueError, match="shuffle must be a bool or 'batch'"):
            mlp().fit(x, y, epochs=1, shuffle=bad, verbose=0)


def test_lambda_callback_takes_keras3_positional_order():
    """Keras 3: on_epoch_begin, on_epoch_end, on_train_begin, on_train_end,
    on_train_batch_begin, on_train_batch_end; the on_batch_* aliases by keyword."""
    seen = []
    cb = cbs.LambdaCallback(None, None, lambda logs: seen.append("train_begin"),
                            lambda logs: seen.append("train_end"),
                            lambda b, logs: seen.append(("tbb", b)),
                            lambda b, logs: seen.append(("tbe", b)),
                            on_batch_begin=lambda b, logs: seen.append(("bb", b)))
    x, y = make_data(16)
    mlp().fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    assert seen == ["train_begin", ("tbb", 0), ("bb", 0), ("tbe", 0), ("tbb", 1), ("bb", 1),
                    ("tbe", 1), "train_end"]
    with pytest.raises(TypeError):
        cbs.LambdaCallback(None, None, None, None, None, None, lambda b, logs: None)


def test_fbeta_monitors_are_maximized():
    assert cbs.infer_mode("val_fbeta_score") == "max"
    assert cbs.EarlyStopping(monitor="fbeta_score")._direction == "max"


def _half_init(shape, dtype="float32"):
    return np.full(shape, 0.5, dtype)


class _ScaledInit(fastnn.initializers.Initializer):
    def __init__(self, v=0.2):
        self.v = v

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.v, dtype or "float32")

    def get_config(self):
        return {"v": self.v}


class _SquareReg(fastnn.regularizers.Regularizer):
    def __init__(self, f=0.1):
        self.f = f

    def __call__(self, w):
        return self.f * float(np.sum(w * w))

    def gradient(self, w):
        return 2 * self.f * w

    def get_config(self):
        return {"f": self.f}


def test_custom_initializers_and_regularizers_round_trip(tmp_path):
    """A model with the user's initializer function, Initializer and Regularizer classes
    saves and loads with them in custom_objects (the function was saved as its repr, with
    a memory address, and none was looked up there), with the same loss (penalty
    included); without them, an error naming the missing one."""
    x, labels = make_data(16)
    y = fastnn.utils.to_categorical(labels, K)
    model = Sequential([Input((D,)), Dense(K, kernel_initializer=_half_init,
                                           bias_initializer=_ScaledInit(0.3),
                                           kernel_regularizer=_SquareReg(0.5))])
    model.compile("sgd", "mse")
    path = tmp_path / "custom_init.fnn"
    model.save(path)
    custom = {"_half_init": _half_init, "_ScaledInit": _ScaledInit, "_SquareReg": _SquareReg}
    back = load_model(path, custom_objects=custom)
    assert back.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    back.fit(x, y, epochs=1, verbose=0)
    for missing in custom:
        with pytest.raises(ValueError, match=f"Unknown .*{missing}"):
            load_model(path, custom_objects={k: v for k, v in custom.items() if k != missing})


def test_keras_function_activation_config():
    """Keras 3 names a function activation {"class_name": "function", "config": name}:
    resolved from custom_objects or the built-in names (a TypeError from Linear before)."""
    from fastnn import activations
    from fastnn.utils._custom import custom_objects_scope
    assert isinstance(activations.get({"class_name": "function", "config": "relu"}),
                      type(activations.get("relu")))
    with custom_objects_scope({"twice": lambda v: 2 * v}):
        act = activations.get({"class_name": "function", "config": "twice"})
        np.testing.assert_array_equal(act(np.array([1.0, -2.0])), [2.0, -4.0])
    with pytest.raises(ValueError, match="cannot read the activation config"):
        activations.get({"class_name": "Swish", "config": {}})
