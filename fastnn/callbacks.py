"""Training callbacks with Keras 3 names, arguments, defaults and semantics.

A callback is an object whose hooks ``fit``, ``evaluate`` and ``predict`` call at fixed
points. Subclass :class:`Callback` and override the hooks you need; every hook of the
base class does nothing.

* :class:`History` -- records the epoch logs (``fit`` returns it).
* :class:`ProgbarLogger` -- progress bar, or one line per epoch, on stdout.
* :class:`EarlyStopping` -- stop when a monitored quantity stops improving.
* :class:`ModelCheckpoint` -- save the model (or its weights) every epoch, or the best.
* :class:`LearningRateScheduler` -- set the learning rate from ``schedule(epoch, lr)``.
* :class:`ReduceLROnPlateau` -- reduce the learning rate when a quantity plateaus.
* :class:`CSVLogger` -- one CSV row per epoch.
* :class:`TerminateOnNaN` -- stop on a NaN/inf loss.
* :class:`LambdaCallback` -- a callback made of plain functions.
* :class:`CallbackList` -- dispatches every hook to a list of callbacks.

The model protocol
------------------
Callbacks use only this much of the model (see :class:`ModelLike`): a settable
``stop_training`` bool that ``fit`` checks after every batch and every epoch;
``get_weights()`` / ``set_weights(list)``; ``save(path)`` / ``save_weights(path)``;
``optimizer.learning_rate`` readable and settable as a float; and a settable
``history`` attribute (set to the :class:`History`).

The call sequence
-----------------
``fit`` drives a :class:`CallbackList` like this (``evaluate`` and ``predict`` use
the ``on_test_*`` / ``on_predict_*`` hooks the same way)::

    cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                       model=model, epochs=E, steps=S, verbose=verbose,
                       samples=N, metrics=[...])
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(initial_epoch, E):
        cbs.on_epoch_begin(epoch)
        for batch in range(S):
            cbs.on_train_batch_begin(batch)
            ...                                   # one training step
            cbs.on_train_batch_end(batch, running_logs)  # epoch averages so far
            if model.stop_training:
                break
        epoch_logs = dict(running_logs)           # + "val_*" after validation
        cbs.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    cbs.on_train_end(epoch_logs)
    return cbs.history
"""
from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import time
import warnings
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Protocol,
                    Sequence, Union)

import numpy as np

from fastnn.utils._args import FilePath, check_path, check_real
from fastnn.utils._files import atomic_write_text
from fastnn.utils.progbar import Progbar, format_logs, print_msg

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping",
           "ModelCheckpoint", "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger",
           "TerminateOnNaN", "LambdaCallback", "ModelLike"]

Logs = Optional[Dict[str, Any]]


class ModelLike(Protocol):
    """What callbacks need from a model (``fastnn.Sequential`` provides it)."""

    stop_training: bool
    optimizer: Any  # with a readable and settable float ``learning_rate``

    def get_weights(self) -> List[np.ndarray]: ...

    def set_weights(self, weights: Sequence[np.ndarray]) -> None: ...

    def save(self, filepath: str) -> None: ...

    def save_weights(self, filepath: str) -> None: ...


# ----------------------------------------------------------------------------- base
class Callback:
    """Base class of callbacks: every hook is a no-op.

    Attributes
    ----------
    model : ModelLike or None
        The model being trained, set by :meth:`set_model` before ``on_train_begin``.
    params : dict or None
        Training parameters set by :meth:`set_params`; ``fit`` passes
        ``{"epochs", "steps", "verbose", "samples", "metrics"}`` (``steps`` is None
        when the number of batches per epoch is unknown).

    Notes
    -----
    ``logs`` dicts map names to floats. At ``on_train_batch_end`` they hold the
    running averages over the epoch so far (``{"loss": ..., "accuracy": ...}``); at
    ``on_epoch_end`` the epoch's values plus ``"val_*"`` keys when validation ran. A
    callback may add keys to the epoch logs (``LearningRateScheduler`` adds
    ``"learning_rate"``); callbacks later in the list see them.

    ``on_batch_begin`` / ``on_batch_end`` are backwards-compatible aliases: the base
    ``on_train_batch_begin`` / ``on_train_batch_end`` call them.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: Optional[Dict[str, Any]] = None

    def set_model(self, model: ModelLike) -> None:
        """Attach the model the callback acts on."""
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        """Store the training parameters (``epochs``, ``steps``, ``verbose`` ...)."""
        self.params = params

    # -- training
    def on_train_begin(self, logs: Logs = None) -> None:
        """Called once at the start of ``fit``."""

    def on_train_end(self, logs: Logs = None) -> None:
        """Called once at the end of ``fit`` with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Called at the end of epoch ``epoch`` with the epoch's (and ``val_*``) logs."""

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before training batch ``batch`` (0-based within the epoch)."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after training batch ``batch`` with the epoch's running averages."""
        self.on_batch_end(batch, logs=logs)

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Alias of :meth:`on_train_batch_begin` (called by it)."""

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Alias of :meth:`on_train_batch_end` (called by it)."""

    # -- evaluation (also validation inside fit)
    def on_test_begin(self, logs: Logs = None) -> None:
        """Called at the start of ``evaluate`` (and of validation in ``fit``)."""

    def on_test_end(self, logs: Logs = None) -> None:
        """Called at the end of ``evaluate`` with its logs."""

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before evaluation batch ``batch``."""

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after evaluation batch ``batch`` with the running averages."""

    # -- prediction
    def on_predict_begin(self, logs: Logs = None) -> None:
        """Called at the start of ``predict``."""

    def on_predict_end(self, logs: Logs = None) -> None:
        """Called at the end of ``predict``."""

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before prediction batch ``batch``."""

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after prediction batch ``batch``."""


def _pythonify(logs: Logs) -> Dict[str, Any]:
    """Convert NumPy scalars (and 0-d arrays) in ``logs`` to Python floats, in place."""
    if logs is None:
        return {}
    for k, v in logs.items():
        if type(v) is not float and (isinstance(v, (np.floating, np.integer))
                                     or (isinstance(v, np.ndarray) and v.ndim == 0)):
            logs[k] = float(v)
    return logs


class CallbackList(Callback):
    """Dispatches every hook to a list of callbacks, in order.

    Parameters
    ----------
    callbacks : Callback or sequence of Callback, optional
        The user's callbacks.
    add_history : bool, default False
        Append a :class:`History` unless the list already holds one.
    add_progbar : bool, default False
        Append a :class:`ProgbarLogger` unless the list already holds one.
    model : ModelLike, optional
        If given, :meth:`set_model` is called with it (which also sets
        ``model.history`` to the :class:`History`).
    **params
        If any, :meth:`set_params` is called with them as one dict, e.g.
        ``epochs=10, steps=469, verbose=1, samples=60000, metrics=[...]``.

    Notes
    -----
    The automatically added :class:`History` and :class:`ProgbarLogger` come *after*
    the user's callbacks, so they see keys those add to the epoch logs (such as
    ``"learning_rate"``), and the bar's final line is printed after any message of
    the user's callbacks. Epoch and batch logs are passed as one dict shared by all
    callbacks, with NumPy scalars converted to floats in place.

    Examples
    --------
    >>> cbs = CallbackList([EarlyStopping(patience=2)], add_history=True,
    ...                    model=model, epochs=10, steps=100, verbose=0)  # doctest: +SKIP
    >>> cbs.on_train_begin()  # doctest: +SKIP
    """

    def __init__(self, callbacks: Union[Callback, Sequence[Callback], None] = None,
                 add_history: bool = False, add_progbar: bool = False,
                 model: Optional[ModelLike] = None, **params: Any) -> None:
        super().__init__()
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, CallbackList):
            callbacks = list(callbacks.callbacks)
        elif isinstance(callbacks, (Callback, type)):
            callbacks = [callbacks]
        self.callbacks: List[Callback] = []
        for cb in callbacks:
            self.append(cb)
        self._history: Optional[History] = None
        self._progbar: Optional[ProgbarLogger] = None
        for cb in self.callbacks:
            if isinstance(cb, History) and self._history is None:
                self._history = cb
            elif isinstance(cb, ProgbarLogger) and self._progbar is None:
                self._progbar = cb
        if add_history and self._history is None:
            self._history = History()
            self.callbacks.append(self._history)
        if add_progbar and self._progbar is None:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    def batch_hooks_each_step(self) -> bool:
        """Whether some callback has batch hooks that must run after every step: any that
        overrides one, unless it sets ``_batch_hooks_per_run = True`` (it is content to be
        called at the end of a run of steps that ``fit`` compiles into one call, with that
        run's last batch number and the logs after it: the progress bar is, and a
        ModelCheckpoint saving per epoch)."""
        names = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin",
                 "on_batch_end")
        def hook(cb, name):   # its class's or, as LambdaCallback sets them, the instance's
            f = getattr(cb, name)
            return getattr(f, "__func__", f)

        def per_run(cb) -> bool:
            # the permission holds for the hooks of the class that gave it, not for those a
            # subclass (or the instance) puts in their place
            if not getattr(cb, "_batch_hooks_per_run", False):
                return False
            # (set on the instance: its class's hooks have it)
            owner = next((c for c in type(cb).__mro__ if "_batch_hooks_per_run" in vars(c)),
                         type(cb))
            return all(hook(cb, h) is getattr(owner, h) for h in names)

        return any(not per_run(cb) and any(hook(cb, h) is not getattr(Callback, h)
                                           for h in names) for cb in self.callbacks)

    # -- container behaviour
    def append(self, callback: Callback) -> None:
        """Add a callback at the end of the list."""
        if isinstance(callback, type):
            raise TypeError(f"callbacks must be instances, received the class "
                            f"{callback.__name__}; write {callback.__name__}(...)")
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be fastnn.callbacks.Callback instances, "
                            f"received {type(callback).__name__}")
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        if self.params is not None:
            callback.set_params(self.params)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def __getitem__(self, index: int) -> Callback:
        return self.callbacks[index]

    @property
    def history(self) -> Optional["History"]:
        """The :class:`History` in the list (what ``fit`` returns), or None."""
        return self._history

    @property
    def progbar(self) -> Optional["ProgbarLogger"]:
        """The :class:`ProgbarLogger` in the list, or None."""
        return self._progbar

    def set_model(self, model: ModelLike) -> None:
        """Attach ``model`` to every callback; sets ``model.history`` to the History."""
        self.model = model
        if self._history is not None:
            try:
                model.history = self._history
            except AttributeError:
                pass
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params: Dict[str, Any]) -> None:
        """Pass ``params`` to every callback."""
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    # -- dispatch
    def on_train_begin(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        self.on_train_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        self.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_test_batch_end(batch, logs)

    def on_predict_begin(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs: Logs = None) -> None:
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_predict_end(logs)

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = logs if logs is not None else {}
        for cb in self.callbacks:
            cb.on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = logs if logs is not None else {}  # may hold arrays of outputs
        for cb in self.callbacks:
            cb.on_predict_batch_end(batch, logs)


# ----------------------------------------------------------------------------- History
class History(Callback):
    """Records the epoch logs; ``fit`` returns it (and sets ``model.history`` to it).

    Attributes
    ----------
    history : dict of str to list
        ``history["loss"][i]`` is the loss of the i-th epoch run by this ``fit``;
        likewise every key of the epoch logs (``"accuracy"``, ``"val_loss"``,
        ``"learning_rate"`` ...). A key first seen at a later epoch has a shorter list.
    epoch : list of int
        The (0-based) epoch indices that ran.
    params : dict
        The training parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[Any]] = {}
        self.epoch: List[int] = []

    def on_train_begin(self, logs: Logs = None) -> None:
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            try:
                self.model.history = self
            except AttributeError:
                pass

    def __repr__(self) -> str:
        return f"<History epochs={len(self.epoch)} keys={list(self.history)}>"


# ----------------------------------------------------------------------------- progress
class ProgbarLogger(Callback):
    """Prints progress to stdout; ``fit`` adds one when ``verbose != 0``.

    Reads ``params["verbose"]`` (``"auto"`` means 1), ``params["epochs"]``,
    ``params["steps"]`` (None: unknown, learnt after the first epoch) and
    ``params.get("samples")`` (shown as samples/s when given).

    * ``verbose=1``: ``"Epoch 3/10"``, then a bar redrawn in place at most every
      0.05 s (on a terminal) whose final line reads
      ``469/469 [====...====] - 5s 11ms/step - 11834 samples/s - loss: 0.4012 -
      accuracy: 0.8551 - val_loss: 0.4100 - val_accuracy: 0.8502``. When stdout is
      not a terminal only the header and the final line are printed.
    * ``verbose=2``: one line per epoch,
      ``Epoch 3/10 - 5s - loss: 0.4012 - accuracy: 0.8551 - val_loss: ...``.

    Inside ``fit`` (between ``on_train_begin`` and ``on_train_end``) the
    ``on_test_*`` hooks of validation are ignored; in ``evaluate`` / ``predict`` a
    bar over their batches is shown (one line for ``verbose=2``).

    Batch logs are taken to be running averages (what ``fit`` passes) and are shown
    as given; the epoch logs are shown on the final line.
    """

    _batch_hooks_per_run = True   # it only redraws the bar: see CallbackList

    def __init__(self) -> None:
        super().__init__()
        self.verbose: int = 1
        self.epochs: int = 1
        self.target: Optional[int] = None
        self.samples: Optional[int] = None
        self.seen = 0
        self.progbar: Optional[Progbar] = None
        self._called_in_fit = False
        self._epoch = 0
        self._epoch_start = 0.0

    def set_params(self, params: Dict[str, Any]) -> None:
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else int(verbose or 0)
        self.epochs = int(params.get("epochs") or 1)
        steps = params.get("steps")
        self.target = None if steps is None else int(steps)
        samples = params.get("samples")
        self.samples = None if samples is None else int(samples)

    def _new_bar(self, verbose: int) -> None:
        self.seen = 0
        self.progbar = Progbar(self.target, verbose=verbose, samples=self.samples)

    def _update(self, batch: int, logs: Logs) -> None:
        self.seen = batch + 1
        bar = self.progbar
        if bar is None:
            return
        if logs:
            bar.stateful_metrics.update(logs)  # running averages: show as given
            bar.update(self.seen, list(logs.items()), finalize=False)
        else:
            bar.update(self.seen, None, finalize=False)

    def _finalize(self, logs: Logs) -> None:
        bar = self.progbar
        if bar is None:
            return
        if self.target is None:  # learnt in the first epoch
            self.target = self.seen
            bar.target = self.seen
        current = self.seen if 0 < self.seen < (bar.target or 0) else bar.target
        bar.update(current, list(logs.items()) if logs else None, finalize=True)
        self.progbar = None

    # -- fit
    def on_train_begin(self, logs: Logs = None) -> None:
        self._called_in_fit = True

    def on_train_end(self, logs: Logs = None) -> None:
        self._called_in_fit = False

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self._epoch = epoch
        self._epoch_start = time.perf_counter()
        self.seen = 0
        self.progbar = None
        if self.verbose == 1:
            print_msg(f"Epoch {epoch + 1}/{self.epochs}")
            self._new_bar(1)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.verbose == 1:
            self._update(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.verbose == 1:
            self._finalize(logs)
        elif self.verbose == 2:
            elapsed = time.perf_counter() - self._epoch_start
            print_msg(f"Epoch {epoch + 1}/{self.epochs} - {elapsed:.0f}s"
                      + format_logs((logs or {}).items()))

    # -- evaluate
    def on_test_begin(self, logs: Logs = None) -> None:
        if not self._called_in_fit and self.verbose:
            self._new_bar(self.verbose)

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        if not self._called_in_fit and self.verbose:
            self._update(batch, logs)

    def on_test_end(self, logs: Logs = None) -> None:
        if not self._called_in_fit and self.verbose:
            self._finalize(logs)

    # -- predict
    def on_predict_begin(self, logs: Logs = None) -> None:
        if self.verbose:
            self._new_bar(self.verbose)

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.verbose:
            self._update(batch, None)  # never display prediction outputs

    def on_predict_end(self, logs: Logs = None) -> None:
        if self.verbose:
            self._finalize(None)


# ----------------------------------------------------------------------------- monitors
_MIN_MODE_HINTS = ("loss", "error", "mse", "mae", "crossentropy", "hinge", "divergence")
_MAX_MODE_HINTS = ("acc", "auc", "precision", "recall", "f1", "fbeta")


def infer_mode(monitor: str, who: str = "monitor") -> str:
    """Keras's ``mode="auto"``: ``"min"`` for a loss or an error (the name, without
    ``val_``, contains loss, error, mse, mae, crossentropy, hinge or divergence), ``"max"``
    for a score (acc, auc, precision, recall, f1, fbeta).

    Raises
    ------
    ValueError
        For a name that says neither: pass ``mode``. (The monitoring callbacks then ask the
        compiled metric of that name, as Keras 3 does, and raise when training starts if
        it does not say either.)
    """
    name = monitor.lower()
    name = name[4:] if name.startswith("val_") else name
    if any(h in name for h in _MIN_MODE_HINTS):
        return "min"
    if any(h in name for h in _MAX_MODE_HINTS):
        return "max"
    raise ValueError(f"{who}={monitor!r}: fastnn cannot tell whether it should be "
                     f"maximized or minimized; pass mode='max' (higher is better) or "
                     f"mode='min'")


def _count(value, name: str) -> int:
    """A non-negative whole number argument (patience, cooldown, ...; 5.0 is 5, as Keras
    takes it), or an error naming it (1.7 was truncated to 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value >= 0 and float(value).is_integer()):
        raise ValueError(f"{name} must be a non-negative int, received {name}={value!r}")
    return int(value)


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and bool(np.isnan(v))


class _MonitorCallback(Callback):
    """Shared logic: a monitored quantity, its direction, and improvement tests."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged quantity (a str), "
                            f"received monitor={monitor!r}")
        min_delta = check_real(min_delta, "min_delta")
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode {mode!r} is unknown, fallback "
                          f"to auto mode.", UserWarning, stacklevel=3)
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self._direction: Optional[str] = mode
        if mode == "auto":
            try:
                self._direction = infer_mode(monitor, f"{type(self).__name__}: monitor")
            except ValueError:
                # a name that says neither: Keras 3 asks the compiled metric of that name
                # when training starts (AUC(name="prc") is maximized); so does
                # _resolve_direction, and raises there if none says
                self._direction = None
        self.monitor_op: Callable[[Any, Any], Any] = (
            np.greater if self._direction == "max" else np.less)
        self._warned_missing = False

    def _resolve_direction(self) -> None:
        """A direction left open at construction, from the model's compiled metric named
        ``monitor`` (without ``val_``): its class's name (``AUC``, ``Precision``,
        ``MeanSquaredError``...) or, for a function, the function's name, read as
        :func:`infer_mode` reads names. ValueError if none says."""
        if self._direction is not None:
            return
        name = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        get = getattr(self.model, "_metrics", None)
        for m in (get() if callable(get) else None) or ():
            if getattr(m, "name", None) != name:
                continue
            fn = getattr(m, "_fn", None)
            for what in (type(m).__name__, getattr(fn, "__name__", None)):
                try:
                    self._direction = infer_mode(what) if what else None
                except ValueError:
                    continue
                break
        if self._direction is None:   # the construction's message
            infer_mode(self.monitor, f"{type(self).__name__}: monitor")
        self.monitor_op = np.greater if self._direction == "max" else np.less

    def _is_improvement(self, value: Any, reference: Any) -> bool:
        """``value`` beats ``reference`` by more than ``min_delta``. No reference, or a NaN
        one, is beaten by any value but NaN; a NaN value never improves (Keras starts from
        +-inf: a NaN first epoch must not become the best for good)."""
        self._resolve_direction()
        if _is_nan(value):
            return False
        if reference is None or _is_nan(reference):
            return True
        if self._direction == "max":
            return bool(value - self.min_delta > reference)
        return bool(value + self.min_delta < reference)

    def _get_monitor_value(self, logs: Logs, what: str) -> Any:
        """``logs[monitor]``, or None with a UserWarning (once per training run)."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None and not self._warned_missing:
            self._warned_missing = True
            warnings.warn(f"{what} conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}",
                          UserWarning, stacklevel=3)
        return value


def _copy_weights(weights: Sequence[Any]) -> List[Any]:
    return [np.array(w, copy=True) for w in weights]


class EarlyStopping(_MonitorCallback):
    """Stop training when a monitored quantity has stopped improving.

    At the end of every epoch the monitored value is compared with the best so far;
    after ``patience`` epochs without an improvement larger than ``min_delta``,
    ``model.stop_training`` is set, and ``fit`` ends after this epoch.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Key of the epoch logs to watch.
    min_delta : float, default 0
        Minimum change that counts as an improvement (absolute value is used).
    patience : int, default 0
        Number of epochs with no improvement after which training stops. Training
        never stops at epoch 0.
    verbose : int, default 0
        1 prints ``"Epoch N: early stopping"`` and the restore message.
    mode : {"auto", "min", "max"}, default "auto"
        Direction of improvement. ``"auto"`` means ``"max"`` for scores (names
        containing ``acc``, ``auc``, ``precision``, ``recall``, ``f1`` or ``fbeta``),
        ``"min"`` for losses and errors; for any other name the compiled metric of that
        name decides by its class (``AUC(name="prc")`` is maximized), else training
        starts with a ValueError (pass ``mode``); see :func:`infer_mode`.
    baseline : float, optional
        The patience counter is only reset by an epoch that improves on the best
        value *and* on ``baseline``. An epoch that improves on the best value but not
        on ``baseline`` is not a stop either (Keras's rule: the stop is only checked
        after an epoch without improvement), so training stops at the first epoch
        that does not improve on the best once ``patience`` epochs have passed since
        the last reset.
    restore_best_weights : bool, default False
        Keep a copy of the weights of the best epoch and restore it at
        ``on_train_end`` -- whether training stopped early or ran all its epochs
        (Keras 3 behaviour). Epochs are compared regardless of ``baseline``.
    start_from_epoch : int, default 0
        Epochs before this one are not monitored (warm-up).

    A NaN monitored value is never an improvement and never becomes the best (Keras
    keeps a NaN first value as its best, after which nothing improves on it); the same
    holds for ReduceLROnPlateau and ModelCheckpoint's ``save_best_only``.

    Attributes
    ----------
    stopped_epoch : int
        Epoch (0-based) at which it stopped training, 0 if it did not.
    best : float or None
        Best monitored value.
    best_epoch : int
        Epoch of ``best``.
    wait : int
        Epochs since the patience counter was last reset.

    Warns
    -----
    UserWarning
        Once per ``fit`` if ``monitor`` is missing from the epoch logs (the epoch is
        then ignored); the warning lists the available keys.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = _count(patience, "patience")
        self.verbose = verbose
        self.baseline = check_real(baseline, "baseline", allow_none=True)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = _count(start_from_epoch, "start_from_epoch")
        self.wait = 0
        self.stopped_epoch = 0
        self.best: Optional[float] = None
        self.best_epoch = 0
        self.best_weights: Optional[List[np.ndarray]] = None

    def on_train_begin(self, logs: Logs = None) -> None:
        self._resolve_direction()
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None
        self._warned_missing = False

    def get_monitor_value(self, logs: Logs) -> Optional[float]:
        """The monitored value in ``logs`` (None, with a one-time warning, if absent)."""
        return self._get_monitor_value(logs, "Early stopping")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # First monitored epoch: its weights are the best so far.
            self.best_weights = _copy_weights(self.model.get_weights())
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _copy_weights(self.model.get_weights())
            # Reset patience only when beating both the previous best and the baseline.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print_msg(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print_msg("Restoring model weights from the end of the best epoch: "
                          f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_MonitorCallback):
    """Save the model (or its weights) after every epoch, or every ``save_freq`` batches.

    Parameters
    ----------
    filepath : str, bytes or os.PathLike
        Where to save. May hold ``str.format`` fields filled with ``epoch``
        (1-based), ``batch`` (1-based, batch-level saving only) and the keys of the
        logs, e.g. ``"ckpt/{epoch:02d}-{val_loss:.2f}.fnn"``. Missing parent
        directories are created.
    monitor : str, default "val_loss"
        Quantity compared when ``save_best_only``.
    verbose : int, default 0
        1 prints a message per save decision.
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value seen so far (kept
        across ``fit`` calls of the same instance). If ``monitor`` is missing from
        the logs, a warning is issued and the model is saved.
    save_weights_only : bool, default False
        Use ``model.save_weights(path)`` instead of ``model.save(path)``.
    mode : {"auto", "min", "max"}, default "auto"
        As in :class:`EarlyStopping`.
    save_freq : "epoch" or int, default "epoch"
        Save at the end of every epoch, or after every ``save_freq`` training
        batches (with that batch's running-average logs).
    initial_value_threshold : float, optional
        Initial best value for ``save_best_only``: nothing is saved until this is
        beaten.

    Raises
    ------
    ValueError
        If ``save_freq`` is neither ``"epoch"`` nor a positive int.
    KeyError
        At save time, if ``filepath`` has a format field absent from the logs.
    """

    @property
    def _batch_hooks_per_run(self) -> bool:
        """Saving per epoch needs no batch: fit may run its batches in compiled runs (read
        when fit starts, so a save_freq changed after construction counts)."""
        return self.save_freq == "epoch"

    def __init__(self, filepath: FilePath, monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto",
                 save_freq: Union[str, int] = "epoch",
                 initial_value_threshold: Optional[float] = None) -> None:
        super().__init__(monitor, mode, 0.0)
        self.filepath = check_path(filepath, "filepath")
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        if save_freq != "epoch" and not (isinstance(save_freq, numbers.Integral)
                                         and not isinstance(save_freq, bool)
                                         and save_freq > 0):
            raise ValueError(f"Unrecognized save_freq: {save_freq!r}. Expected "
                             f"save_freq are 'epoch' or positive integer values")
        self.save_freq = save_freq
        self.initial_value_threshold = check_real(initial_value_threshold,
                                                  "initial_value_threshold", allow_none=True)
        self.best: Optional[float] = self.initial_value_threshold
        self._current_epoch = 0
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1

    def on_train_begin(self, logs: Logs = None) -> None:
        self._resolve_direction()
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1
        self._warned_missing = False
        # a model that cannot be saved fails now, not after its first epoch of training
        check = getattr(self.model, "_save_meta", None)
        if check is not None and not self.save_weights_only:
            check()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self._current_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":
            return
        if batch <= self._last_batch_seen:  # a new epoch started
            self._batches_seen_since_last_saving += batch + 1
        else:
            self._batches_seen_since_last_saving += batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _get_file_path(self, epoch: int, batch: Optional[int], logs: Logs) -> str:
        logs = dict(logs or {})
        fields = dict(logs, epoch=epoch + 1)
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". '
                           f"Reason: {e} is not a key of the logs "
                           f"({', '.join(sorted(logs))}) nor 'epoch'") from None

    def _should_save(self, epoch: int, logs: Logs, filepath: str) -> bool:
        if not self.save_best_only:
            if self.verbose > 0:
                print_msg(f"Epoch {epoch + 1}: saving model to {filepath}")
            return True
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available. "
                          f"Available metrics are: {','.join(logs or {})}",
                          UserWarning, stacklevel=3)
            return True
        if isinstance(current, np.ndarray) and current.ndim > 0:
            warnings.warn(f"Can save best model only when `monitor` is a scalar value. "
                          f"Received: {current}. Falling back to `save_best_only=False`.",
                          UserWarning, stacklevel=3)
            return True
        best_str = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print_msg(f"Epoch {epoch + 1}: {self.monitor} improved from {best_str} "
                          f"to {current:.5f}, saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            print_msg(f"Epoch {epoch + 1}: {self.monitor} did not improve from {best_str}")
        return False

    def _save_model(self, epoch: int, batch: Optional[int], logs: Logs) -> None:
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(f"Please specify a non-directory filepath for "
                                    f"ModelCheckpoint. Filepath used is an existing "
                                    f"directory: {filepath}")
        dirname = os.path.dirname(filepath)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)


# ----------------------------------------------------------------------------- learning rate
def _get_lr(model: Any) -> float:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        raise ValueError('Optimizer must have a "learning_rate" attribute.')
    return float(optimizer.learning_rate)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule``.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> float``: the epoch index (0-based) and the current
        learning rate give the learning rate for this epoch. A one-argument
        ``schedule(epoch)`` is accepted too.
    verbose : int, default 0
        1 prints ``"Epoch N: LearningRateScheduler setting learning rate to X."``.

    Notes
    -----
    At the end of every epoch ``logs["learning_rate"]`` is set to the optimizer's
    learning rate, so it appears in the :class:`History` and the progress bar.

    Raises
    ------
    ValueError
        If ``schedule`` returns something other than a float (Python or NumPy), or
        the model's optimizer has no ``learning_rate``.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, received {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        self._n_args: Optional[int] = None

    def _schedule_n_args(self) -> int:
        if self._n_args is None:
            self._n_args = 2
            try:
                sig = inspect.signature(self.schedule)
            except (TypeError, ValueError):  # builtins without a signature
                return self._n_args
            try:
                sig.bind(0, 0.0)
            except TypeError:
                try:
                    sig.bind(0)
                    self._n_args = 1
                except TypeError:
                    raise TypeError("schedule must accept (epoch, lr) or (epoch), its "
                                    f"signature is {sig}") from None
        return self._n_args

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        lr = _get_lr(self.model)
        if self._schedule_n_args() == 2:
            new_lr = self.schedule(epoch, lr)
        else:
            new_lr = self.schedule(epoch)
        if isinstance(new_lr, bool) or not isinstance(new_lr, (float, np.floating)):
            raise ValueError(f"The output of the `schedule` function should be a float. "
                             f"Got: {new_lr!r}")
        self.model.optimizer.learning_rate = float(new_lr)
        if self.verbose > 0:
            print_msg(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate "
                      f"to {float(new_lr)}.")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is not None:
            logs["learning_rate"] = _get_lr(self.model)


class ReduceLROnPlateau(_MonitorCallback):
    """Reduce the learning rate when a monitored quantity has stopped improving.

    After ``patience`` epochs without an improvement larger than ``min_delta``, the
    learning rate becomes ``max(lr * factor, min_lr)`` (if ``lr > min_lr``) and the
    callback waits ``cooldown`` epochs before counting again.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Key of the epoch logs to watch.
    factor : float, default 0.1
        ``new_lr = lr * factor``; must be < 1.
    patience : int, default 10
        Epochs with no improvement after which the learning rate is reduced.
    verbose : int, default 0
        1 prints a message on every reduction.
    mode : {"auto", "min", "max"}, default "auto"
        As in :class:`EarlyStopping`.
    min_delta : float, default 1e-4
        Threshold for measuring a new optimum.
    cooldown : int, default 0
        Epochs to wait after a reduction before resuming normal operation (the
        patience counter stays at 0 meanwhile; an improvement still updates ``best``).
    min_lr : float, default 0.0
        Lower bound on the learning rate.

    Notes
    -----
    At the end of every epoch ``logs["learning_rate"]`` is set to the learning rate
    used during that epoch (before any reduction), like Keras.

    Raises
    ------
    ValueError
        If ``factor >= 1``.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        if check_real(factor, "factor") >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. "
                             f"Received factor={factor}")
        super().__init__(monitor, mode, min_delta)
        self.factor = float(factor)
        self.patience = _count(patience, "patience")
        self.verbose = verbose
        self.cooldown = _count(cooldown, "cooldown")
        self.min_lr = check_real(min_lr, "min_lr", low=0.0)
        self.cooldown_counter = 0
        self.wait = 0
        self.best: Optional[float] = None

    def _reset(self) -> None:
        self.cooldown_counter = 0
        self.wait = 0
        self.best = None
        self._warned_missing = False

    def on_train_begin(self, logs: Logs = None) -> None:
        self._resolve_direction()
        self._reset()

    def in_cooldown(self) -> bool:
        """Whether the callback is in its post-reduction cooldown."""
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is None:
            logs = {}
        logs["learning_rate"] = _get_lr(self.model)
        current = self._get_monitor_value(logs, "Learning rate reduction is")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = _get_lr(self.model)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        print_msg(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing "
                                  f"learning rate to {new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


# ----------------------------------------------------------------------------- CSV
class CSVLogger(Callback):
    """Stream the epoch logs to a CSV file, one row per epoch, flushed every epoch.

    The header is ``epoch`` (0-based, like Keras) followed by the sorted keys of the
    first epoch's logs. A key that first appears at a later epoch (say ``val_loss``
    with validation every other epoch) adds a column: the file is rewritten with the
    extended, re-sorted header and ``NA`` in the earlier rows. A key missing from an
    epoch's logs is written as ``NA``.

    Parameters
    ----------
    filename : str, bytes or os.PathLike
        The CSV file; missing parent directories are created.
    separator : str, default ","
        Field separator.
    append : bool, default False
        Append to an existing file (continuing a training run) instead of
        overwriting it. Its header is reused, and written only if the file is empty.
    """

    def __init__(self, filename: FilePath, separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.filename = check_path(filename, "filename")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, received "
                             f"separator={separator!r}")
        self.sep = separator
        self.append = append
        self.keys: Optional[List[str]] = None
        self.csv_file = None
        self._writer = None
        self._header_in_file: Optional[List[str]] = None  # header row the file holds
        self._needs_header = True

    def _dialect(self) -> type:
        sep = self.sep

        class _Dialect(csv.excel):
            delimiter = sep
            lineterminator = "\n"

        return _Dialect

    def _open(self, mode: str) -> None:
        self.csv_file = open(self.filename, mode, newline="", encoding="utf-8")
        self._writer = csv.writer(self.csv_file, dialect=self._dialect())

    def on_train_begin(self, logs: Logs = None) -> None:
        self._close()
        self.keys = None
        self._header_in_file = None
        self._needs_header = True
        dirname = os.path.dirname(self.filename)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as f:
                first = next(csv.reader(f, dialect=self._dialect()), None)
            if first:
                self._needs_header = False
                if first[0] == "epoch":
                    self._header_in_file = first
                    self.keys = first[1:]
        self._open("a" if self.append else "w")

    @staticmethod
    def _handle_value(v: Any) -> Any:
        if v is None:
            return "NA"
        if isinstance(v, str):
            return v
        if isinstance(v, np.ndarray) and v.ndim == 0:
            return v.item()
        if isinstance(v, Iterable):
            return f"[{', '.join(map(str, v))}]"
        return v

    def _add_columns(self, new_keys: List[str]) -> None:
        """Extend the columns; rewrite the file if it already has our header."""
        keys = sorted(set(self.keys or []) | set(new_keys))
        if self._header_in_file is None:
            if self._needs_header:  # nothing written yet
                self.keys = keys
            else:
                warnings.warn(f"CSVLogger: {self.filename} has no header of ours, new "
                              f"keys {new_keys} are not logged", UserWarning, stacklevel=3)
            return
        self._close()
        with open(self.filename, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, dialect=self._dialect()))
        old_header = rows[0]
        header = ["epoch"] + keys

        def write(f) -> None:
            w = csv.writer(f, dialect=self._dialect())
            w.writerow(header)
            for row in rows[1:]:
                d = dict(zip(old_header, row))
                w.writerow([d.get(k, "NA") for k in header])
        atomic_write_text(self.filename, write, name="filename")
        self.keys = keys
        self._header_in_file = header
        self._open("a")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = logs or {}
        if self.csv_file is None or self.csv_file.closed:  # used without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            keys = set(logs)
            for name in (self.params or {}).get("metrics") or []:
                if isinstance(name, str) and name.startswith("val_"):
                    keys.add(name)
            self.keys = sorted(keys)
        else:
            new = [k for k in logs if k not in self.keys]
            if new:
                self._add_columns(new)
        if self._needs_header:
            self._header_in_file = ["epoch"] + self.keys
            self._writer.writerow(self._header_in_file)
            self._needs_header = False
        self._writer.writerow([epoch] + [self._handle_value(logs.get(k)) for k in self.keys])
        self.csv_file.flush()

    def _close(self) -> None:
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self._writer = None

    def on_train_end(self, logs: Logs = None) -> None:
        self._close()


# ----------------------------------------------------------------------------- misc
class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite.

    After a training batch whose ``logs["loss"]`` is NaN/inf, prints
    ``"Batch N: Invalid loss, terminating training"`` (N is the 0-based batch index)
    and sets ``model.stop_training``: ``fit`` then ends the epoch (``on_epoch_end``
    and ``on_train_end`` still run).

    Parameters
    ----------
    raise_error : bool, default False
        Raise a RuntimeError instead (skipping the other callbacks' cleanup).
    """

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        try:
            bad = not math.isfinite(float(loss))
        except (TypeError, ValueError):
            return
        if bad:
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. "
                                   f"Loss value: {loss}. Terminating training immediately.")
            print_msg(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


_EPOCH_HOOKS = ("on_epoch_begin", "on_epoch_end")
_BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
                "on_predict_batch_begin", "on_predict_batch_end")
_LOGS_HOOKS = ("on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
               "on_predict_begin", "on_predict_end")


class LambdaCallback(Callback):
    """A callback made of plain functions, called with positional arguments.

    Parameters
    ----------
    on_epoch_begin, on_epoch_end : callable(epoch, logs), optional
    on_train_begin, on_train_end : callable(logs), optional
    on_train_batch_begin, on_train_batch_end : callable(batch, logs), optional
        Called for every training batch, before the ``on_batch_*`` function if both
        are given. These six in Keras 3's positional order.
    on_batch_begin, on_batch_end : callable(batch, logs), optional, keyword only
        Called for every training batch (as Keras' aliases).
    **kwargs : callable
        Any other hook by name (``on_test_end=...``, ``on_predict_batch_end=...``).

    Raises
    ------
    TypeError
        For a keyword that is not a hook name, or a value that is not callable.

    Examples
    --------
    >>> log = []
    >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: log.append(logs["loss"]))
    """

    def __init__(self, on_epoch_begin: Optional[Callable] = None,
                 on_epoch_end: Optional[Callable] = None,
                 on_train_begin: Optional[Callable] = None,
                 on_train_end: Optional[Callable] = None,
                 on_train_batch_begin: Optional[Callable] = None,
                 on_train_batch_end: Optional[Callable] = None, *,
                 on_batch_begin: Optional[Callable] = None,
                 on_batch_end: Optional[Callable] = None,
                 **kwargs: Callable) -> None:
        super().__init__()
        fns = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                   on_batch_begin=on_batch_begin, on_batch_end=on_batch_end,
                   on_train_begin=on_train_begin, on_train_end=on_train_end,
                   on_train_batch_begin=on_train_batch_begin,
                   on_train_batch_end=on_train_batch_end, **kwargs)
        for name, fn in fns.items():
            if fn is None:
                continue
            if name not in _EPOCH_HOOKS + _BATCH_HOOKS + _LOGS_HOOKS:
                raise TypeError(f"LambdaCallback got an unexpected keyword argument "
                                f"{name!r}; hooks are {_EPOCH_HOOKS + _BATCH_HOOKS + _LOGS_HOOKS}")
            if not callable(fn):
                raise TypeError(f"{name} must be callable, received {type(fn).__name__}")
            setattr(self, name, self._wrap(name, fn))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        if name in _LOGS_HOOKS:
            def hook(logs=None):
                fn(logs)
        elif name in ("on_train_batch_begin", "on_train_batch_end"):
            alias = "on_batch_" + name.rsplit("_", 1)[1]

            def hook(batch, logs=None):
                fn(batch, logs)
                getattr(self, alias)(batch, logs=logs)
        else:
            def hook(index, logs=None):
                fn(index, logs)
        hook.__name__ = name
        return hook
