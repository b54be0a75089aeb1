"""Tests for fastnn.callbacks and fastnn.utils.progbar.

A tiny fake model implements the callback protocol, and ``run_fit`` drives the hooks
in the order ``Sequential.fit`` does, so these tests need no real model.
"""
from __future__ import annotations

import csv
import io
import os
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

from fastnn import callbacks as cb
from fastnn.utils import progbar as progbar_mod
from fastnn.utils.progbar import Progbar, format_value, print_msg


# ----------------------------------------------------------------------------- fakes
class FakeOptimizer:
    def __init__(self, learning_rate=0.1):
        self.learning_rate = learning_rate


class FakeModel:
    """Implements exactly the protocol callbacks rely on."""

    def __init__(self, lr=0.1):
        self.stop_training = False
        self.optimizer = FakeOptimizer(lr)
        self.weights = [np.zeros((2, 2)), np.zeros(2)]
        self.saves = []  # (kind, path)

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w, copy=True) for w in weights]

    def save(self, path):
        with open(path, "w") as f:
            f.write("model")
        self.saves.append(("model", path))

    def save_weights(self, path):
        with open(path, "w") as f:
            f.write("weights")
        self.saves.append(("weights", path))


def run_fit(model, callbacks, epoch_logs, steps=3, verbose=0, batch_logs=None,
            samples=None, add_progbar=None):
    """Drive the hooks like Sequential.fit.

    ``epoch_logs`` is a list (one dict per epoch) or a callable ``epoch -> dict``.
    The model's weights are set to the epoch number during each epoch, so restored
    weights identify an epoch. Returns ``(history, epochs_run)``.
    """
    epochs = len(epoch_logs) if not callable(epoch_logs) else 10
    get_logs = epoch_logs if callable(epoch_logs) else (lambda e: epoch_logs[e])
    cbs = cb.CallbackList(callbacks, add_history=True,
                          add_progbar=verbose != 0 if add_progbar is None else add_progbar,
                          model=model, epochs=epochs, steps=steps, verbose=verbose,
                          samples=samples, metrics=["loss"])
    model.stop_training = False
    cbs.on_train_begin()
    epochs_run = 0
    logs = {}
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        model.weights = [np.full_like(w, epoch) for w in model.weights]
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            blogs = batch_logs(epoch, batch) if batch_logs else {"loss": 1.0 / (batch + 1)}
            cbs.on_train_batch_end(batch, blogs)
            if model.stop_training:
                break
        logs = dict(get_logs(epoch))
        cbs.on_epoch_end(epoch, logs)
        epochs_run += 1
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return cbs.history, epochs_run


def weights_epoch(model):
    """The epoch whose weights the model holds (see run_fit)."""
    return int(model.weights[0].flat[0])


def val_losses(values):
    return [{"loss": v, "val_loss": v} for v in values]


# ----------------------------------------------------------------------------- base / list
class Recorder(cb.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin{epoch}")

    def on_batch_begin(self, batch, logs=None):  # alias, via on_train_batch_begin
        self.calls.append(f"batch_begin{batch}")

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(f"batch_end{batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end{epoch}")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_base_callback_hooks_are_noops():
    c = cb.Callback()
    assert c.model is None and c.params is None
    for name in ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
                 "on_predict_begin", "on_predict_end"):
        assert getattr(c, name)({}) is None
    for name in ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
                 "on_train_batch_end", "on_batch_begin", "on_batch_end",
                 "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin",
                 "on_predict_batch_end"):
        assert getattr(c, name)(0, {}) is None


def test_callback_list_call_order_and_aliases():
    rec = Recorder()
    run_fit(FakeModel(), [rec], val_losses([1.0, 0.5]), steps=2)
    assert rec.calls == ["train_begin",
                         "epoch_begin0", "batch_begin0", "batch_end0", "batch_begin1",
                         "batch_end1", "epoch_end0",
                         "epoch_begin1", "batch_begin0", "batch_end0", "batch_begin1",
                         "batch_end1", "epoch_end1",
                         "train_end"]


def test_callback_list_defaults_model_and_params():
    model = FakeModel()
    user = Recorder()
    cbs = cb.CallbackList([user], add_history=True, add_progbar=True, model=model,
                          epochs=3, steps=10, verbose=1)
    assert len(cbs) == 3
    assert cbs[0] is user  # user callbacks first, defaults appended
    assert isinstance(cbs.history, cb.History) and cbs[1] is cbs.history
    assert isinstance(cbs.progbar, cb.ProgbarLogger) and cbs[2] is cbs.progbar
    assert model.history is cbs.history
    for c in cbs:
        assert c.model is model
        assert c.params == {"epochs": 3, "steps": 10, "verbose": 1}
    # An existing History / ProgbarLogger is reused, not duplicated.
    h, p = cb.History(), cb.ProgbarLogger()
    cbs = cb.CallbackList([h, p], add_history=True, add_progbar=True)
    assert list(cbs) == [h, p] and cbs.history is h and cbs.progbar is p
    # No defaults unless asked.
    assert len(cb.CallbackList()) == 0 and cb.CallbackList().history is None
    # append() attaches model and params.
    cbs = cb.CallbackList(None, model=model, epochs=1)
    extra = cb.Callback()
    cbs.append(extra)
    assert extra.model is model and extra.params == {"epochs": 1}
    # A single callback, or a CallbackList, is accepted.
    assert list(cb.CallbackList(user)) == [user]
    assert list(cb.CallbackList(cb.CallbackList([user]))) == [user]


def test_callback_list_rejects_classes_and_non_callbacks():
    with pytest.raises(TypeError, match=r"EarlyStopping\(\.\.\.\)"):
        cb.CallbackList([cb.EarlyStopping])
    with pytest.raises(TypeError, match="Callback instances"):
        cb.CallbackList([object()])


def test_callback_list_converts_numpy_scalars():
    seen = {}
    lam = cb.LambdaCallback(on_epoch_end=lambda e, logs: seen.update(logs))
    cbs = cb.CallbackList([lam])
    cbs.on_epoch_end(0, {"loss": np.float32(0.5), "n": np.int64(3), "a": np.array(2.0),
                         "s": "text"})
    assert seen == {"loss": 0.5, "n": 3.0, "a": 2.0, "s": "text"}
    assert all(type(seen[k]) is float for k in ("loss", "n", "a"))


# ----------------------------------------------------------------------------- History
def test_history_records_epoch_logs():
    model = FakeModel()
    logs = [{"loss": 1.0 - 0.1 * e, "accuracy": 0.5 + 0.1 * e, "val_loss": 1.1 - 0.1 * e}
            for e in range(3)]
    history, n = run_fit(model, [], logs)
    assert n == 3
    assert history.epoch == [0, 1, 2]
    assert history.history["loss"] == pytest.approx([1.0, 0.9, 0.8])
    assert history.history["accuracy"] == pytest.approx([0.5, 0.6, 0.7])
    assert history.history["val_loss"] == pytest.approx([1.1, 1.0, 0.9])
    assert history.params["epochs"] == 3 and history.params["steps"] == 3
    assert model.history is history
    # Reused for a new fit, it starts afresh.
    cbs = cb.CallbackList([history], add_history=True, model=model)
    cbs.on_train_begin()
    assert history.history == {} and history.epoch == []


def test_history_sees_learning_rate_added_by_user_callbacks():
    sched = cb.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history, _ = run_fit(FakeModel(), [sched], val_losses([1.0, 0.9, 0.8]))
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


# ----------------------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize("patience,expected_stop", [(0, 3), (1, 3), (2, 4), (3, 5)])
def test_early_stopping_patience(patience, expected_stop):
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = cb.EarlyStopping(monitor="loss", patience=patience)
    model = FakeModel()
    _, n = run_fit(model, [stopper], val_losses(losses))
    assert stopper.stopped_epoch == expected_stop
    assert n == expected_stop + 1
    assert model.stop_training


def test_early_stopping_runs_all_epochs_while_improving():
    stopper = cb.EarlyStopping(patience=0)
    history, n = run_fit(FakeModel(), [stopper], val_losses([5, 4, 3, 2, 1]))
    assert n == 5 and stopper.stopped_epoch == 0 and len(history.epoch) == 5


def test_early_stopping_min_delta():
    # 0.95 and 0.91 improve on 1.0 by less than min_delta=0.1: no improvement.
    stopper = cb.EarlyStopping(monitor="val_loss", min_delta=0.1, patience=1)
    _, n = run_fit(FakeModel(), [stopper], val_losses([1.0, 0.95, 0.91, 0.5]))
    assert stopper.stopped_epoch == 1 and n == 2
    # Negative min_delta means the same (its absolute value is used).
    stopper = cb.EarlyStopping(monitor="val_loss", min_delta=-0.1, patience=1)
    _, n = run_fit(FakeModel(), [stopper], val_losses([1.0, 0.95, 0.91, 0.5]))
    assert n == 2
    # An improvement larger than min_delta resets patience.
    stopper = cb.EarlyStopping(monitor="val_loss", min_delta=0.1, patience=1)
    _, n = run_fit(FakeModel(), [stopper], val_losses([1.0, 0.8, 0.6, 0.55, 0.5]))
    assert stopper.stopped_epoch == 3 and n == 4


@pytest.mark.parametrize("monitor", ["val_accuracy", "accuracy", "val_auc", "precision",
                                     "val_recall", "f1_score"])
def test_early_stopping_auto_mode_maximizes_accuracy_like(monitor):
    stopper = cb.EarlyStopping(monitor=monitor, patience=1)
    logs = [{monitor: v} for v in (0.5, 0.6, 0.7, 0.65, 0.66, 0.9)]
    _, n = run_fit(FakeModel(), [stopper], logs)
    assert stopper.monitor_op is np.greater
    assert stopper.stopped_epoch == 3 and stopper.best == 0.7 and n == 4


@pytest.mark.parametrize("monitor", ["loss", "val_loss", "val_mse", "mae"])
def test_early_stopping_auto_mode_minimizes_others(monitor):
    assert cb.EarlyStopping(monitor=monitor).monitor_op is np.less


def test_early_stopping_explicit_mode():
    # mode="max" on a loss: increasing values are improvements.
    stopper = cb.EarlyStopping(monitor="loss", mode="max", patience=0)
    _, n = run_fit(FakeModel(), [stopper], val_losses([1.0, 2.0, 3.0, 2.5, 4.0]))
    assert stopper.stopped_epoch == 3 and n == 4
    stopper = cb.EarlyStopping(monitor="val_accuracy", mode="min", patience=0)
    _, n = run_fit(FakeModel(), [stopper], [{"val_accuracy": v} for v in (0.9, 0.8, 0.85)])
    assert n == 3 and stopper.stopped_epoch == 2
    with pytest.warns(UserWarning, match="unknown, fallback to auto"):
        stopper = cb.EarlyStopping(mode="biggest")
    assert stopper.mode == "auto"


def test_early_stopping_baseline_never_beaten():
    # No epoch beats baseline 0.5: stop after `patience` epochs without improvement,
    # counted from the first epoch, and restore the best epoch among them.
    model = FakeModel()
    stopper = cb.EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True)
    _, n = run_fit(model, [stopper], val_losses([0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74]))
    assert n == 5 and stopper.stopped_epoch == 4
    assert stopper.best == 0.7 and stopper.best_epoch == 2
    assert weights_epoch(model) == 2


def test_early_stopping_baseline_beaten_resets_patience():
    stopper = cb.EarlyStopping(patience=2, baseline=0.5)
    # 0.4 beats the baseline at epoch 2: patience restarts there.
    _, n = run_fit(FakeModel(), [stopper], val_losses([0.9, 0.8, 0.4, 0.45, 0.46, 0.47]))
    assert stopper.stopped_epoch == 4 and n == 5
    # An improvement that does not beat the baseline does not reset the count: the
    # first epoch counts towards patience ...
    losses = [0.9, 0.95, 0.96, 0.4, 0.3]
    stopper = cb.EarlyStopping(patience=2, baseline=0.1)
    _, n = run_fit(FakeModel(), [stopper], val_losses(losses))
    assert stopper.stopped_epoch == 1 and n == 2
    # ... whereas without a baseline it resets the count.
    stopper = cb.EarlyStopping(patience=2)
    _, n = run_fit(FakeModel(), [stopper], val_losses(losses))
    assert stopper.stopped_epoch == 2 and n == 3


def test_early_stopping_restores_best_weights_on_stop():
    model = FakeModel()
    stopper = cb.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True,
                               verbose=1)
    _, n = run_fit(model, [stopper], val_losses([0.2, 0.15, 0.1, 0.11, 0.12, 0.05]))
    assert n == 5 and stopper.stopped_epoch == 4
    assert weights_epoch(model) == 2
    assert stopper.best_epoch == 2


def test_early_stopping_restores_best_weights_without_stopping():
    # Keras 3: the best weights are restored at the end even without an early stop.
    model = FakeModel()
    stopper = cb.EarlyStopping(patience=10, restore_best_weights=True)
    _, n = run_fit(model, [stopper], val_losses([0.5, 0.3, 0.4, 0.45]))
    assert n == 4 and stopper.stopped_epoch == 0
    assert weights_epoch(model) == 1
    # Best at the last epoch: the weights stay those of the last epoch.
    model = FakeModel()
    stopper = cb.EarlyStopping(patience=10, restore_best_weights=True)
    run_fit(model, [stopper], val_losses([0.5, 0.4, 0.3]))
    assert weights_epoch(model) == 2


def test_early_stopping_no_restore_by_default():
    model = FakeModel()
    stopper = cb.EarlyStopping(patience=1)
    _, n = run_fit(model, [stopper], val_losses([0.2, 0.1, 0.3, 0.4, 0.5]))
    assert n == 3 and weights_epoch(model) == 2


def test_early_stopping_snapshot_is_a_copy():
    # A model whose get_weights returns its live arrays must not corrupt the snapshot.
    class AliasingModel(FakeModel):
        def get_weights(self):
            return self.weights

        def set_weights(self, weights):
            for w, v in zip(self.weights, weights):
                w[...] = v

    model = AliasingModel()
    stopper = cb.EarlyStopping(patience=5, restore_best_weights=True)
    model.weights = [np.zeros(2)]
    stopper.set_model(model)
    stopper.on_train_begin()
    for epoch, loss in enumerate([0.3, 0.1, 0.2]):
        model.weights[0][...] = epoch  # in-place update, like an optimizer step
        stopper.on_epoch_end(epoch, {"val_loss": loss})
    stopper.on_train_end()
    assert model.weights[0][0] == 1


def test_early_stopping_start_from_epoch():
    stopper = cb.EarlyStopping(patience=0, start_from_epoch=3)
    # Epochs 0-2 are ignored even though they get worse.
    _, n = run_fit(FakeModel(), [stopper], val_losses([1, 2, 3, 4, 3, 5, 1]))
    assert stopper.stopped_epoch == 5 and n == 6


def test_early_stopping_missing_monitor_warns_once_and_lists_keys():
    stopper = cb.EarlyStopping(monitor="val_loss", patience=0)
    logs = [{"loss": v, "accuracy": 0.5} for v in (1.0, 2.0, 3.0)]
    with pytest.warns(UserWarning, match=r"`val_loss` which is not available.*loss,accuracy") \
            as record:
        _, n = run_fit(FakeModel(), [stopper], logs)
    assert n == 3  # never stops: no value to monitor
    assert sum("val_loss" in str(w.message) for w in record) == 1
    # A new fit warns again.
    with pytest.warns(UserWarning, match="not available"):
        run_fit(FakeModel(), [stopper], logs)


def test_early_stopping_instance_reuse():
    stopper = cb.EarlyStopping(patience=1)
    _, n1 = run_fit(FakeModel(), [stopper], val_losses([0.1, 0.2, 0.3]))
    # The second fit is not compared with the first one's best (0.1).
    _, n2 = run_fit(FakeModel(), [stopper], val_losses([5, 4, 3, 2]))
    assert n1 == 2 and n2 == 4 and stopper.stopped_epoch == 0


def test_early_stopping_verbose_messages(capsys):
    stopper = cb.EarlyStopping(patience=0, verbose=1, restore_best_weights=True)
    run_fit(FakeModel(), [stopper], val_losses([0.5, 0.6]))
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out


# ----------------------------------------------------------------------------- ModelCheckpoint
def test_checkpoint_save_best_only_formatted_names(tmp_path):
    model = FakeModel()
    path = tmp_path / "ckpt" / "model-{epoch:02d}-{val_loss:.2f}.fnn"
    ckpt = cb.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    run_fit(model, [ckpt], val_losses([0.5, 0.4, 0.45, 0.3, 0.3]))
    expected = ["model-01-0.50.fnn", "model-02-0.40.fnn", "model-04-0.30.fnn"]
    assert [os.path.basename(p) for _, p in model.saves] == expected
    assert sorted(os.listdir(tmp_path / "ckpt")) == expected  # parent dir was created
    assert all(kind == "model" for kind, _ in model.saves)
    assert (tmp_path / "ckpt" / expected[0]).read_text() == "model"
    assert ckpt.best == 0.3


def test_checkpoint_save_every_epoch_and_weights_only(tmp_path):
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(str(tmp_path / "w{epoch}.weights"), save_weights_only=True)
    run_fit(model, [ckpt], val_losses([0.5, 0.6, 0.7]))
    assert model.saves == [("weights", str(tmp_path / f"w{e}.weights")) for e in (1, 2, 3)]
    assert (tmp_path / "w3.weights").read_text() == "weights"


def test_checkpoint_fixed_path_overwritten_on_improvement(tmp_path):
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "best.fnn", monitor="val_accuracy",
                              save_best_only=True)
    logs = [{"val_accuracy": v} for v in (0.5, 0.7, 0.6, 0.8)]
    run_fit(model, [ckpt], logs)
    assert len(model.saves) == 3 and ckpt.best == 0.8  # auto mode: max for accuracy


def test_checkpoint_mode_and_initial_value_threshold(tmp_path):
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "m{epoch}.fnn", monitor="val_loss",
                              save_best_only=True, initial_value_threshold=0.35)
    run_fit(model, [ckpt], val_losses([0.5, 0.4, 0.3, 0.32, 0.2]))
    assert [os.path.basename(p) for _, p in model.saves] == ["m3.fnn", "m5.fnn"]
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "x{epoch}.fnn", monitor="score", mode="max",
                              save_best_only=True)
    run_fit(model, [ckpt], [{"score": v} for v in (1, 3, 2, 4)])
    assert [os.path.basename(p) for _, p in model.saves] == ["x1.fnn", "x2.fnn", "x4.fnn"]
    # checked when made, as EarlyStopping's baseline (a string failed at the end of the
    # first epoch: "Unknown format code 'f' for object of type 'str'")
    with pytest.raises(TypeError, match="initial_value_threshold"):
        cb.ModelCheckpoint(tmp_path / "y.fnn", save_best_only=True, initial_value_threshold="1")


def test_checkpoint_best_kept_across_fits(tmp_path):
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "b{epoch}.fnn", save_best_only=True)
    run_fit(model, [ckpt], val_losses([0.3]))
    run_fit(model, [ckpt], val_losses([0.4, 0.2]))
    assert [os.path.basename(p) for _, p in model.saves] == ["b1.fnn", "b2.fnn"]


def test_checkpoint_save_freq_batches(tmp_path):
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "e{epoch}-b{batch}.fnn", save_freq=2)
    run_fit(model, [ckpt], val_losses([0.5, 0.4]), steps=3)
    # 6 batches over 2 epochs, a save every 2 batches (counted across epochs).
    assert [os.path.basename(p) for _, p in model.saves] == ["e1-b2.fnn", "e2-b1.fnn",
                                                             "e2-b3.fnn"]


def test_checkpoint_errors_and_warnings(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        cb.ModelCheckpoint(tmp_path / "m.fnn", save_freq="batch")
    with pytest.raises(ValueError, match="save_freq"):
        cb.ModelCheckpoint(tmp_path / "m.fnn", save_freq=0)
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "m-{val_acc:.2f}.fnn")
    with pytest.raises(KeyError, match="val_acc"):
        run_fit(model, [ckpt], val_losses([0.5]))
    # save_best_only with a missing monitor: warn, and save anyway (Keras).
    model = FakeModel()
    ckpt = cb.ModelCheckpoint(tmp_path / "n.fnn", monitor="val_auc", save_best_only=True)
    with pytest.warns(UserWarning, match="val_auc"):
        run_fit(model, [ckpt], val_losses([0.5]))
    assert len(model.saves) == 1
    (tmp_path / "dir.fnn").mkdir()
    ckpt = cb.ModelCheckpoint(tmp_path / "dir.fnn")
    with pytest.raises(IsADirectoryError):
        run_fit(FakeModel(), [ckpt], val_losses([0.5]))


def test_checkpoint_verbose_messages(tmp_path, capsys):
    ckpt = cb.ModelCheckpoint(tmp_path / "m.fnn", save_best_only=True, verbose=1)
    run_fit(FakeModel(), [ckpt], val_losses([0.5, 0.6]))
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from None to 0.50000, saving model to" in out
    assert "Epoch 2: val_loss did not improve from 0.50000" in out


# ----------------------------------------------------------------------------- LR schedules
def test_learning_rate_scheduler_sets_lr_each_epoch():
    seen = []
    model = FakeModel(lr=0.1)

    def schedule(epoch, lr):
        return lr if epoch < 2 else lr * 0.5

    probe = cb.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(model.optimizer.learning_rate))
    history, _ = run_fit(model, [cb.LearningRateScheduler(schedule), probe],
                         val_losses([1, 1, 1, 1]))
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_learning_rate_scheduler_one_arg_and_numpy_float():
    model = FakeModel()
    run_fit(model, [cb.LearningRateScheduler(lambda epoch: np.float32(0.01 * (epoch + 1)))],
            val_losses([1, 1, 1]))
    assert model.optimizer.learning_rate == pytest.approx(0.03)
    assert type(model.optimizer.learning_rate) is float


@pytest.mark.parametrize("bad", [1, "0.1", None, np.array([0.1]), True])
def test_learning_rate_scheduler_rejects_non_float(bad):
    sched = cb.LearningRateScheduler(lambda epoch, lr: bad)
    with pytest.raises(ValueError, match="should be a float"):
        run_fit(FakeModel(), [sched], val_losses([1]))


def test_learning_rate_scheduler_errors_and_verbose(capsys):
    with pytest.raises(TypeError, match="callable"):
        cb.LearningRateScheduler(0.1)
    model = FakeModel()
    model.optimizer = object()
    with pytest.raises(ValueError, match="learning_rate"):
        run_fit(model, [cb.LearningRateScheduler(lambda e, lr: lr)], val_losses([1]))
    run_fit(FakeModel(lr=0.1), [cb.LearningRateScheduler(lambda e, lr: 0.5, verbose=1)],
            val_losses([1]))
    assert "Epoch 1: LearningRateScheduler setting learning rate to 0.5." in \
        capsys.readouterr().out


def lr_trace(callback, monitored, key="val_loss", lr=1.0):
    """Learning rate in use during each epoch, and the History."""
    model = FakeModel(lr=lr)
    trace = []
    probe = cb.LambdaCallback(
        on_epoch_begin=lambda e, logs: trace.append(model.optimizer.learning_rate))
    history, _ = run_fit(model, [probe, callback], [{key: v} for v in monitored])
    return trace, history, model


def test_reduce_lr_on_plateau_patience():
    rlr = cb.ReduceLROnPlateau(factor=0.5, patience=2)
    trace, history, model = lr_trace(rlr, [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8])
    # epochs 2,3 do not improve -> reduce at the end of epoch 3; again after 4,5.
    assert trace == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    # logs["learning_rate"] is the rate used during the epoch (recorded before reducing).
    assert history.history["learning_rate"] == pytest.approx(trace)
    assert model.optimizer.learning_rate == pytest.approx(0.25)


def test_reduce_lr_on_plateau_min_delta():
    # Improvements of 1e-5 are below min_delta=1e-4: a plateau.
    rlr = cb.ReduceLROnPlateau(factor=0.1, patience=1)
    trace, _, _ = lr_trace(rlr, [1.0, 1.0 - 1e-5, 1.0 - 2e-5])
    assert trace == pytest.approx([1, 1, 0.1])
    rlr = cb.ReduceLROnPlateau(factor=0.1, patience=1, min_delta=0.0)
    trace, _, _ = lr_trace(rlr, [1.0, 1.0 - 1e-5, 1.0 - 2e-5])
    assert trace == pytest.approx([1, 1, 1])


def test_reduce_lr_on_plateau_cooldown():
    rlr = cb.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2)
    trace, _, _ = lr_trace(rlr, [1.0] * 8)
    # Keras semantics: reduce at the end of epoch 1, cooldown=2 counts down at the
    # ends of epochs 2 and 3 (the counter is decremented before the check, so the
    # plateau is counted again from epoch 3 on): reduce again after epochs 3 and 5.
    assert trace == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])
    # Without cooldown: a reduction after every epoch of the plateau.
    trace, _, _ = lr_trace(cb.ReduceLROnPlateau(factor=0.5, patience=1), [1.0] * 4)
    assert trace == pytest.approx([1, 1, 0.5, 0.25])
    # An improvement during cooldown still updates best.
    rlr = cb.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=3)
    lr_trace(rlr, [1.0, 1.0, 0.5, 0.6])
    assert rlr.best == 0.5


def test_reduce_lr_on_plateau_min_lr():
    rlr = cb.ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05)
    trace, _, model = lr_trace(rlr, [1.0] * 5)
    assert trace == pytest.approx([1, 1, 0.1, 0.05, 0.05])
    assert model.optimizer.learning_rate == pytest.approx(0.05)


def test_reduce_lr_on_plateau_mode_and_errors(capsys):
    rlr = cb.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1, verbose=1)
    trace, _, _ = lr_trace(rlr, [0.5, 0.6, 0.7, 0.6], key="val_accuracy")
    assert trace == pytest.approx([1, 1, 1, 1])  # increasing accuracy is improvement
    trace, _, _ = lr_trace(cb.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5,
                                                patience=1), [0.7, 0.6, 0.5],
                           key="val_accuracy")
    assert trace == pytest.approx([1, 1, 0.5])
    with pytest.raises(ValueError, match="factor >= 1.0"):
        cb.ReduceLROnPlateau(factor=1.0)
    with pytest.warns(UserWarning, match="not available"):
        lr_trace(cb.ReduceLROnPlateau(monitor="val_loss"), [1.0], key="loss")
    lr_trace(cb.ReduceLROnPlateau(factor=0.5, patience=0, verbose=1), [1.0, 1.0])
    assert "ReduceLROnPlateau reducing learning rate to 0.5." in capsys.readouterr().out


# ----------------------------------------------------------------------------- CSVLogger
def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_content(tmp_path):
    path = tmp_path / "logs" / "train.csv"
    logs = [{"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.75},
            {"loss": 0.4, "accuracy": 0.85, "val_loss": 0.55, "val_accuracy": 0.78}]
    run_fit(FakeModel(), [cb.CSVLogger(path)], logs)
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert rows[1] == ["0", "0.8", "0.5", "0.75", "0.6"]
    assert rows[2] == ["1", "0.85", "0.4", "0.78", "0.55"]
    assert len(rows) == 3
    assert "\r" not in path.read_text()


def test_csv_logger_flushes_every_epoch(tmp_path):
    path = tmp_path / "t.csv"
    lines = []
    probe = cb.LambdaCallback(on_epoch_end=lambda e, logs: lines.append(len(read_csv(path))))
    run_fit(FakeModel(), [cb.CSVLogger(path), probe], val_losses([1, 2, 3]))
    assert lines == [2, 3, 4]


def test_csv_logger_separator_append_and_arrays(tmp_path):
    path = tmp_path / "t.csv"
    run_fit(FakeModel(), [cb.CSVLogger(path, separator=";")], val_losses([1.0]))
    run_fit(FakeModel(), [cb.CSVLogger(path, separator=";", append=True)],
            val_losses([2.0, 3.0]))
    rows = read_csv(path, ";")
    assert rows == [["epoch", "loss", "val_loss"], ["0", "1.0", "1.0"], ["0", "2.0", "2.0"],
                    ["1", "3.0", "3.0"]]
    # append=False overwrites.
    run_fit(FakeModel(), [cb.CSVLogger(path)], [{"loss": 1.0, "v": np.array([1, 2])}])
    assert read_csv(path) == [["epoch", "loss", "v"], ["0", "1.0", "[1, 2]"]]


def test_csv_logger_keys_appearing_later_and_missing(tmp_path):
    path = tmp_path / "t.csv"
    logs = [{"loss": 1.0}, {"loss": 0.9, "val_loss": 1.2}, {"loss": 0.8},
            {"loss": 0.7, "val_loss": 1.0, "learning_rate": 0.1}]
    run_fit(FakeModel(), [cb.CSVLogger(path)], logs)
    assert read_csv(path) == [["epoch", "learning_rate", "loss", "val_loss"],
                              ["0", "NA", "1.0", "NA"],
                              ["1", "NA", "0.9", "1.2"],
                              ["2", "NA", "0.8", "NA"],
                              ["3", "0.1", "0.7", "1.0"]]
    assert not os.path.exists(str(path) + ".tmp")


def test_csv_logger_rewrite_writes_through_a_symlink(tmp_path):
    """A key appearing later rewrites the file: it was written beside the name given and
    renamed over it, replacing a symbolic link with a file (the link's target kept the old
    rows). utils._files.atomic_write_text writes through the link, as the appends do."""
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("")
    os.symlink(real, link)
    run_fit(FakeModel(), [cb.CSVLogger(link)], [{"loss": 1.0}, {"loss": 0.9, "val_loss": 2.0}])
    assert os.path.islink(link)
    assert read_csv(real) == [["epoch", "loss", "val_loss"], ["0", "1.0", "NA"],
                              ["1", "0.9", "2.0"]]
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "real.csv"]


def test_csv_logger_expected_val_metrics_from_params(tmp_path):
    path = tmp_path / "t.csv"
    logger = cb.CSVLogger(path)
    cbs = cb.CallbackList([logger], model=FakeModel(), metrics=["loss", "val_loss"])
    cbs.on_train_begin()
    cbs.on_epoch_end(0, {"loss": 1.0})
    cbs.on_train_end()
    assert read_csv(path) == [["epoch", "loss", "val_loss"], ["0", "1.0", "NA"]]


# ----------------------------------------------------------------------------- TerminateOnNaN
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("-inf")])
def test_terminate_on_nan(bad, capsys):
    def batch_logs(epoch, batch):
        return {"loss": bad if (epoch, batch) == (1, 2) else 0.5}

    rec = Recorder()
    model = FakeModel()
    history, n = run_fit(model, [cb.TerminateOnNaN(), rec], val_losses([1, 1, 1, 1]),
                         steps=5, batch_logs=batch_logs)
    assert model.stop_training and n == 2
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    # The epoch stops right after the bad batch; epoch and train end still run.
    assert rec.calls[-4:] == ["batch_begin2", "batch_end2", "epoch_end1", "train_end"]
    assert history.epoch == [0, 1]


def test_terminate_on_nan_ignores_finite_and_can_raise():
    model = FakeModel()
    _, n = run_fit(model, [cb.TerminateOnNaN()], val_losses([1, 1]))
    assert n == 2 and not model.stop_training
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 0"):
        run_fit(FakeModel(), [cb.TerminateOnNaN(raise_error=True)], val_losses([1]),
                batch_logs=lambda e, b: {"loss": float("nan")})


# ----------------------------------------------------------------------------- LambdaCallback
def test_lambda_callback_hooks():
    calls = []
    lam = cb.LambdaCallback(
        on_train_begin=lambda logs: calls.append("tb"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"eb{epoch}"),
        on_batch_begin=lambda batch, logs: calls.append(f"bb{batch}"),
        on_batch_end=lambda b, l: calls.append(f"be{b}:{l['loss']:.2f}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"ee{epoch}:{logs['val_loss']}"),
        on_train_end=lambda logs: calls.append("te"),
        on_test_end=lambda logs: calls.append("test_end"))
    run_fit(FakeModel(), [lam], val_losses([3]), steps=2)
    assert calls == ["tb", "eb0", "bb0", "be0:1.00", "bb1", "be1:0.50", "ee0:3", "te"]
    lam.on_test_end({})
    assert calls[-1] == "test_end"
    both = []
    lam = cb.LambdaCallback(on_train_batch_end=lambda b, l: both.append("train"),
                            on_batch_end=lambda b, l: both.append("alias"))
    lam.on_train_batch_end(0, {})
    assert both == ["train", "alias"]


def test_lambda_callback_errors():
    with pytest.raises(TypeError, match="on_epoch_middle"):
        cb.LambdaCallback(on_epoch_middle=lambda e, l: None)
    with pytest.raises(TypeError, match="callable"):
        cb.LambdaCallback(on_epoch_end=3)


# ----------------------------------------------------------------------------- Progbar
def test_format_value():
    assert format_value(0.41234) == "0.4123"
    assert format_value(12.5) == "12.5000"
    assert format_value(-0.5) == "-0.5000"
    assert format_value(1.23456e-5) == "1.2346e-05"
    assert format_value(0.0) == "0.0000e+00"
    assert format_value(np.float32(0.25)) == "0.2500"
    assert format_value(float("nan")) == "nan"
    assert format_value("abc") == "abc"


BAR_FINAL = re.compile(
    r"^469/469 \[={30}\] - \d+s \d+(us|ms|s)/step - \d+ samples/s"
    r" - loss: 0\.4012 - accuracy: 0\.8551 - val_loss: 0\.4100 - val_accuracy: 0\.8502$")


def fit_logs(e):
    return {"loss": 0.4012, "accuracy": 0.8551, "val_loss": 0.41, "val_accuracy": 0.8502}


def test_progbar_logger_verbose1_non_tty_prints_final_line_per_epoch(capsys):
    run_fit(FakeModel(), [], [fit_logs(0)] * 3, steps=469, verbose=1, samples=60000,
            batch_logs=lambda e, b: {"loss": 0.5, "accuracy": 0.8})
    out = capsys.readouterr().out
    assert "\r" not in out and "\b" not in out
    lines = out.splitlines()
    assert len(lines) == 6
    for e in range(3):
        assert lines[2 * e] == f"Epoch {e + 1}/3"
        assert BAR_FINAL.match(lines[2 * e + 1]), lines[2 * e + 1]


def test_progbar_logger_verbose2_one_line_per_epoch(capsys):
    run_fit(FakeModel(), [], [fit_logs(0)] * 2, steps=50, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for e, line in enumerate(lines):
        assert re.fullmatch(rf"Epoch {e + 1}/2 - \d+s - loss: 0\.4012 - accuracy: 0\.8551"
                            r" - val_loss: 0\.4100 - val_accuracy: 0\.8502", line), line


def test_progbar_logger_messages_do_not_break_lines(capsys):
    sched = cb.LearningRateScheduler(lambda e, lr: 0.5, verbose=1)
    run_fit(FakeModel(), [sched, cb.TerminateOnNaN()], [fit_logs(0)] * 2, steps=10,
            verbose=1, batch_logs=lambda e, b: {"loss": float("nan") if b == 3 else 0.5})
    lines = capsys.readouterr().out.splitlines()
    # User callbacks run before the ProgbarLogger, as in Keras.
    assert lines[0] == "Epoch 1: LearningRateScheduler setting learning rate to 0.5."
    assert lines[1] == "Epoch 1/2"
    assert lines[2] == "Batch 3: Invalid loss, terminating training"
    # Stopped after batch 3: the final line shows the steps actually run.
    assert lines[3].startswith(" 4/10 [===========>..................] - ")
    assert lines[3].endswith("- learning_rate: 0.5000")
    assert len(lines) == 4


def test_progbar_logger_unknown_steps(capsys):
    run_fit(FakeModel(), [], [fit_logs(0)] * 2, steps=7, verbose=1, add_progbar=False)
    assert capsys.readouterr().out == ""
    model = FakeModel()
    logger = cb.ProgbarLogger()
    cbs = cb.CallbackList([logger], model=model, epochs=2, steps=None, verbose=1)
    cbs.on_train_begin()
    for epoch in range(2):
        cbs.on_epoch_begin(epoch)
        for b in range(7):
            cbs.on_train_batch_end(b, {"loss": 0.5})
        cbs.on_epoch_end(epoch, {"loss": 0.5})
    cbs.on_train_end()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("7/7 [==============================] - ")
    assert lines[3].startswith("7/7 [=")
    assert logger.target == 7


def test_progbar_logger_evaluate_and_predict(capsys):
    logger = cb.ProgbarLogger()
    cbs = cb.CallbackList([logger], model=FakeModel(), epochs=1, steps=4, verbose=1)
    # Inside fit, validation (on_test_*) is silent.
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    for b in range(4):
        cbs.on_train_batch_end(b, {"loss": 0.5})
    cbs.on_test_begin()
    for b in range(3):
        cbs.on_test_batch_end(b, {"loss": 0.7})
    cbs.on_test_end({"loss": 0.7})
    cbs.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.7})
    cbs.on_train_end()
    assert len(capsys.readouterr().out.splitlines()) == 2
    # evaluate: a bar over the test batches.
    cbs.set_params({"epochs": 1, "steps": 3, "verbose": 1})
    cbs.on_test_begin()
    for b in range(3):
        cbs.on_test_batch_end(b, {"loss": 0.7})
    cbs.on_test_end({"loss": 0.7, "accuracy": 0.9})
    out = capsys.readouterr().out
    assert re.fullmatch(r"3/3 \[={30}\] - \d+s \d+(us|ms|s)/step - loss: 0\.7000 - "
                        r"accuracy: 0\.9000\n", out), out
    # predict, verbose=2: one compact line, no values.
    cbs.set_params({"epochs": 1, "steps": 2, "verbose": 2})
    cbs.on_predict_begin()
    for b in range(2):
        cbs.on_predict_batch_end(b, {"outputs": np.zeros(3)})
    cbs.on_predict_end()
    assert re.fullmatch(r"2/2 - \d+s - \d+(us|ms|s)/step\n", capsys.readouterr().out)


def test_progbar_verbose1_non_tty_only_final_line(capsys):
    bar = Progbar(5)
    for i in range(1, 5):
        bar.update(i, [("loss", float(i))])
    assert capsys.readouterr().out == ""
    bar.update(5, [("loss", 5.0)])
    out = capsys.readouterr().out
    assert re.fullmatch(r"5/5 \[={30}\] - \d+s \d+(us|ms|s)/step - loss: 5\.0000\n", out)


def test_progbar_dynamic_redraws_in_place():
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(4, width=8, interval=0.0, dynamic_display=True)
        bar.update(1, [("loss", 1.0)])
        bar.update(2, [("loss", 3.0)])
        bar.update(4, [("loss", 0.5)])
    parts = buf.getvalue().split("\r")
    assert parts[0] == ""
    assert parts[1].startswith("1/4 [=>......] - ETA: ")
    assert parts[1].endswith(" - loss: 1.0000")
    assert parts[2].startswith("2/4 [===>....] - ETA: ")
    assert parts[2].endswith(" - loss: 2.0000")  # average of 1 and 3 over steps
    assert re.fullmatch(r"4/4 \[========\] - \d+s \d+(us|ms|s)/step - loss: 0\.5000\n",
                        parts[3])


def test_progbar_throttles_redraws():
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(1000, interval=60.0, dynamic_display=True)
        for i in range(1, 1000):
            bar.update(i, [("loss", 0.1)])
        assert buf.getvalue().count("\r") == 1  # only the first update drew
        bar.update(1000)
    assert buf.getvalue().count("\r") == 2 and buf.getvalue().endswith("\n")


def test_progbar_print_msg_ends_open_bar_line():
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(3, width=3, interval=0.0, dynamic_display=True)
        bar.update(1)
        print_msg("hello")
        print_msg("world")
        bar.update(3)
    lines = buf.getvalue().split("\n")
    assert lines[0].startswith("\r1/3 [>..]")
    assert lines[1:3] == ["hello", "world"]
    assert lines[3].startswith("\r3/3 [===]")
    assert not progbar_mod._line_open


def test_progbar_averaging_and_stateful():
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(10, verbose=2, stateful_metrics=["acc"])
        bar.update(2, [("loss", 1.0), ("acc", 0.1)])   # covers 2 steps
        bar.add(1, [("loss", 4.0), ("acc", 0.2)])      # covers 1 step
        assert bar.seen == 3
        assert dict(bar._averaged()) == {"loss": pytest.approx(2.0), "acc": 0.2}
        bar.update(10, [("loss", 0.25)])  # finalizing values are taken as given
    assert re.fullmatch(r"10/10 - \d+s - \d+(us|ms|s)/step - loss: 0\.2500 - acc: 0\.2000\n",
                        buf.getvalue())


def test_progbar_unknown_target_and_verbose0(capsys):
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(None, interval=0.0, dynamic_display=True)
        bar.update(5, [("loss", 1.0)])
        bar.update(12, [("loss", 1.0)], finalize=True)
    parts = buf.getvalue().split("\r")
    assert parts[1].startswith("      5/Unknown - ")
    assert parts[2].startswith("     12/Unknown - ") and parts[2].endswith("\n")
    bar = Progbar(3, verbose=0)
    for i in range(1, 4):
        bar.update(i, [("loss", 1.0)])
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError):
        Progbar(10, verbose=3)
    with pytest.raises(ValueError):
        Progbar(-1)


def test_progbar_long_eta_format():
    bar = Progbar(10_000, interval=0.0, dynamic_display=True)
    bar._start -= 2.0  # pretend 2 s for the first step -> ETA ~ 5.5 h
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar.update(1)
    assert re.search(r"ETA: \d:\d\d:\d\d$", buf.getvalue())


class _FakeClock:
    """time.perf_counter stand-in: every call advances ``step`` seconds."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def perf_counter(self):
        self.now += self.step
        return self.now


def _count_renders(monkeypatch, step):
    """Give the progress bar a fake clock and count its redraws: (clock, counts)."""
    clock = _FakeClock(step)
    monkeypatch.setattr(progbar_mod, "time", clock)
    counts = {"renders": 0}
    render = Progbar._render_dynamic

    def counting(self, *args, **kwargs):
        counts["renders"] += 1
        return render(self, *args, **kwargs)

    monkeypatch.setattr(Progbar, "_render_dynamic", counting)
    return clock, counts


@pytest.mark.parametrize("dynamic", [False, True])
def test_progbar_10000_updates_are_throttled(monkeypatch, dynamic):
    # Updates redraw at most once per `interval` (0.05 s) of the bar's clock, plus the
    # final line; without a dynamic display only the final line. Checked with a fake clock
    # (1 ms per reading), not by timing the loop.
    clock, counts = _count_renders(monkeypatch, 0.001)
    buf = io.StringIO()
    with redirect_stdout(buf):
        bar = Progbar(10_000, dynamic_display=dynamic)
        for i in range(1, 10_001):
            bar.update(i, [("loss", 0.5), ("accuracy", 0.9)])
    assert buf.getvalue().endswith("\n")
    if not dynamic:
        assert counts["renders"] == 1
    else:  # about 10 s of fake time: about 200 redraws, not 10,000
        assert 100 <= counts["renders"] <= clock.now / 0.05 + 2, (counts, clock.now)
        assert buf.getvalue().count("\r") <= counts["renders"]


def test_progbar_logger_1875_steps_redraws_are_throttled(monkeypatch):
    monkeypatch.setattr(progbar_mod, "_stdout_is_dynamic", lambda: True)
    clock, counts = _count_renders(monkeypatch, 0.001)
    logger = cb.ProgbarLogger()
    cbs = cb.CallbackList([logger], model=FakeModel(), epochs=1, steps=1875, verbose=1,
                          samples=60000)
    logs = {"loss": 0.5, "accuracy": 0.9}
    buf = io.StringIO()
    with redirect_stdout(buf):
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        for b in range(1875):
            cbs.on_train_batch_begin(b)
            cbs.on_train_batch_end(b, logs)
        cbs.on_epoch_end(0, logs)
        cbs.on_train_end()
    assert "1875/1875 [" in buf.getvalue()
    assert 10 <= counts["renders"] <= clock.now / 0.05 + 2, (counts, clock.now)


def test_a_nan_epoch_is_never_the_best():
    """A NaN first value used to become `best` for good (every comparison with NaN is
    False): ReduceLROnPlateau halved the rate while the loss improved every epoch, and
    EarlyStopping stopped and restored the NaN epoch. As Keras (best starts at +-inf), a
    NaN is no improvement and anything beats it."""
    logs = [float("nan"), 3.0, 2.0, 1.0, 0.5]
    rlr = cb.ReduceLROnPlateau(factor=0.5, patience=2)
    trace, _, _ = lr_trace(rlr, logs)
    assert trace == pytest.approx([1, 1, 1, 1, 1])
    stopper = cb.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    model = FakeModel()
    _, n = run_fit(model, [stopper], val_losses(logs))
    assert n == 5 and stopper.best == 0.5
    stopper = cb.EarlyStopping(monitor="loss", patience=2)
    _, n = run_fit(FakeModel(), [stopper], val_losses([1.0, float("nan"), float("nan"), 0.5]))
    assert n == 3 and stopper.best == 1.0             # NaN epochs do not improve


@pytest.mark.parametrize("monitor,mode", [
    ("loss", "min"), ("val_loss", "min"), ("val_mse", "min"), ("mae", "min"),
    ("val_categorical_crossentropy", "min"), ("mean_absolute_percentage_error", "min"),
    ("val_accuracy", "max"), ("top_k_categorical_accuracy", "max"), ("val_auc", "max"),
    ("precision", "max"), ("val_recall", "max"), ("f1_score", "max")])
def test_auto_mode_directions(monitor, mode):
    assert cb.infer_mode(monitor) == mode
    assert cb.EarlyStopping(monitor=monitor).monitor_op is (np.less if mode == "min"
                                                            else np.greater)


@pytest.mark.parametrize("make", [lambda m: cb.EarlyStopping(monitor=m),
                                  lambda m: cb.ReduceLROnPlateau(monitor=m),
                                  lambda m: cb.ModelCheckpoint("x.fastnn", monitor=m)])
def test_auto_mode_refuses_to_guess(make):
    """A custom metric's name says nothing of its direction: as Keras 3, fastnn asks the
    compiled metric of that name when training starts (a class such as AUC says; here a
    function named r2 does not), and otherwise asks for mode (it minimized once, so a
    score to maximize stopped on its worst epochs)."""
    from fastnn import metrics
    from fastnn.layers import Dense
    from fastnn.models import Sequential

    def r2(y_true, y_pred):
        return np.zeros(len(y_true))

    model = Sequential([Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile("sgd", "binary_crossentropy",
                  metrics=[r2, metrics.AUC(curve="PR", name="prc"),
                           metrics.MeanSquaredError(name="sq")])
    callback = make("val_r2")
    callback.set_model(model)
    with pytest.raises(ValueError, match=r"monitor='val_r2': fastnn cannot tell whether "
                                         r"it should be maximized or minimized; pass "
                                         r"mode='max'"):
        callback.on_train_begin()
    for name, op in (("val_prc", np.greater), ("prc", np.greater), ("val_sq", np.less)):
        callback = make(name)
        callback.set_model(model)
        callback.on_train_begin()
        assert callback.monitor_op is op, name
    assert cb.EarlyStopping(monitor="val_r2", mode="max").monitor_op is np.greater


def test_callback_arguments_checked_by_name():
    """Callback arguments that failed with unnamed errors ('NoneType' object has no
    attribute 'lower', OverflowError, csv's delimiter message at on_train_begin after
    emptying the file) or were truncated silently (patience=1.7 -> 1) name themselves."""
    from fastnn import callbacks as C
    for make, exc, name in (
            (lambda: C.EarlyStopping(monitor=None), TypeError, "monitor"),
            (lambda: C.ReduceLROnPlateau(monitor=["a"]), TypeError, "monitor"),
            (lambda: C.EarlyStopping(patience=float("inf")), ValueError, "patience"),
            (lambda: C.EarlyStopping(patience=1.7), ValueError, "patience"),
            (lambda: C.EarlyStopping(min_delta="a"), TypeError, "min_delta"),
            (lambda: C.EarlyStopping(baseline="x"), TypeError, "baseline"),
            (lambda: C.ReduceLROnPlateau(factor=None), TypeError, "factor"),
            (lambda: C.ReduceLROnPlateau(factor=float("nan")), ValueError, "factor"),
            (lambda: C.ReduceLROnPlateau(cooldown=-1), ValueError, "cooldown"),
            (lambda: C.ModelCheckpoint(None), TypeError, "filepath"),
            (lambda: C.CSVLogger(None), TypeError, "filename"),
            (lambda: C.CSVLogger("log.csv", separator=";;"), ValueError, "separator")):
        with pytest.raises(exc, match=name):
            make()


def test_precision_thresholds_from_numpy_save(tmp_path):
    """NumPy thresholds (np.float32, a float32 array, a 0-d array) are kept as Python
    floats: the model saves (the config held np.float32, which JSON refused: 'cannot save
    the model'), and a 0-d array is one threshold (was 'iteration over a 0-d array')."""
    from fastnn import metrics as M
    from fastnn.layers import Dense
    from fastnn.models import Sequential, load_model
    for t, expect in ((np.float32(0.7), [float(np.float32(0.7))]),
                      (np.linspace(0.1, 0.9, 3).astype(np.float32),
                       [float(v) for v in np.linspace(0.1, 0.9, 3).astype(np.float32)]),
                      (np.array(0.5), [0.5])):
        assert M.Precision(thresholds=t).thresholds == expect
    model = Sequential([Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile("adam", "binary_crossentropy",
                  metrics=[M.Precision(thresholds=np.float32(0.7))])
    model.save(tmp_path / "p.fnn")
    assert isinstance(load_model(tmp_path / "p.fnn"), Sequential)
