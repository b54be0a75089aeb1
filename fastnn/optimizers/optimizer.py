"""The optimizer base class: slots, clipping, weight decay, learning rate, state and config.

An optimizer updates a list of parameter arrays **in place** from a list of gradients of the
same shapes::

    opt = fastnn.optimizers.Adam(learning_rate=1e-3)
    for x, y in batches:
        grads = model_gradients(params, x, y)      # list of arrays, one per param
        opt.apply(grads, params)                   # params change in place

(Keras 3's order: ``apply(grads, trainable_variables)``; after ``opt.build(params)``,
``opt.apply(grads)`` updates the arrays given to ``build``.)

Each step does, in this order (as Keras 3 does):

1. clip the gradients (``clipnorm``, ``global_clipnorm`` or ``clipvalue``, at most one);
2. read the learning rate ``lr`` (a schedule/callable is evaluated at ``iterations``, the
   number of steps taken *before* this one);
3. if ``weight_decay`` is set, decoupled decay ``param -= param * weight_decay * lr``
   (Keras's order: ``(param * weight_decay) * lr``, in the parameter's dtype);
4. the optimizer's own update (``_update_step``), parameter by parameter;
5. ``iterations += 1``.

The arithmetic is done in each parameter's dtype (float32 parameters, float32 math), with
Keras's operations in Keras's order: a float32 step matches Keras 3's (TensorFlow backend) to
the bit or within an ulp (tests/test_optimizers.py compares recorded trajectories); over
hundreds of steps such last-bit differences grow, as between any two implementations.

Per-step cost: the state arrays ("slots": momentum, first/second moments, ...) are created on
the first call, one per parameter, with its shape and dtype; the temporaries are preallocated
too (views of flat buffers per dtype), and every update is a sequence of NumPy ufuncs writing
with ``out=``, so a step allocates nothing the size of a parameter (clipping included: it
writes into preallocated buffers). Parameters of at most ``_group_max_size`` elements are
updated together as one flat array (see ``_make_scratch``), which cuts the per-call overhead
that dominates for biases and other small parameters.
"""
from __future__ import annotations

import inspect
import math
import re
import warnings
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils._args import check_bool, check_real as _check_real, keras_default_only
from ..utils._arrays import empty_aligned
from .schedules import LearningRateSchedule, deserialize as _deserialize_schedule
from .schedules import serialize as _serialize_schedule

# The dtypes parameters and slots may have: the ones every backend's kernels take (numpy
# compares a byte-swapped dtype unequal to the native one).
_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

__all__ = ["Optimizer"]

LearningRate = Union[float, LearningRateSchedule, Callable[..., float]]


def _takes_step(fn: Callable) -> bool:
    """Whether a learning-rate callable takes the step as a positional argument (Keras 3's
    callables take none; fastnn accepts both): it has a positional parameter without a
    default (``lambda lr=0.01: lr``, a value captured Keras's way, is called with none)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in kinds and p.default is p.empty for p in sig.parameters.values())


def _full_aligned(shape, value, dtype) -> np.ndarray:
    """np.full, 64-byte aligned (fastnn.utils._arrays): slots the update kernels stream."""
    a = empty_aligned(shape, dtype, min_bytes=0)
    a.fill(value)
    return a


class _LearningRateValue(float):
    """A learning rate read from an optimizer: a float with Keras 3's variable methods
    ``numpy()`` and ``assign(value)`` (which sets the optimizer's rate, as Keras's
    ``optimizer.learning_rate.assign(value)`` does). It holds its optimizer weakly and
    pickles and copies as a plain float."""

    def __new__(cls, value: float, optimizer: "Optimizer"):
        obj = super().__new__(cls, value)
        obj._optimizer = weakref.ref(optimizer)
        return obj

    def numpy(self) -> float:
        return float(self)

    def assign(self, value) -> None:
        optimizer = self._optimizer()
        if optimizer is None:
            raise ValueError("the optimizer of this learning rate no longer exists")
        optimizer.learning_rate = value

    def __reduce__(self):
        return float, (float(self),)


class Optimizer:
    """Base class of fastnn's optimizers.

    A subclass implements:

    * ``_slot_specs() -> [(name, initial_value), ...]``: the state arrays each parameter
      gets (shaped and typed like it), e.g. ``[("momentum", 0.0), ("velocity", 0.0)]``;
    * ``_step_constants(lr, t) -> tuple``: scalars computed once per step (``t`` counts
      from 1) and passed to every ``_update_step`` call as ``c``;
    * ``_update_step(param, grad, slots, scratch, c)``: update ``param`` in place.
      ``grad`` has ``param``'s shape and dtype; ``slots`` holds the
      parameter's slot arrays in ``_slot_specs`` order; ``scratch`` holds ``_n_scratch``
      temporaries shaped and typed like ``param``, free to overwrite. ``param`` may be a flat
      concatenation of several small parameters (and ``grad``, slots and temporaries with
      it), so the update must be elementwise;
    * ``get_config`` adding its hyperparameters, and ``_default_name``.

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule, or callable
        A float; a :class:`~fastnn.optimizers.schedules.LearningRateSchedule`, called with
        ``iterations`` before every step; or any callable, called with ``iterations`` if it
        takes a positional argument, else with none (Keras 3's convention).
    weight_decay : float >= 0 or None, default None
        Decoupled weight decay: before the update, ``param -= param * weight_decay * lr``.
    clipnorm : float > 0 or None
        Clip each gradient array ``g`` to L2 norm at most ``clipnorm``:
        ``g * clipnorm / max(norm(g), clipnorm)``.
    clipvalue : float > 0 or None
        Clip each gradient element to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float > 0 or None
        Scale all gradients by ``global_clipnorm / max(global_norm, global_clipnorm)``, where
        ``global_norm = sqrt(sum_i ||g_i||^2)``; a non-finite global norm makes every gradient
        NaN, as in Keras. At most one of the three clipping arguments may be set.
    name : str or None
        Defaults to the Keras name of the optimizer ("SGD", "adam", ...).
    use_ema : bool, default False
        Keep an exponential moving average of the weights, as Keras 3: after each step
        ``average = m * average + (1 - m) * weight`` with ``m = ema_momentum`` (0 at the
        first step, so the average starts at the weights); :meth:`finalize_variable_values`
        (which ``fit`` calls at its end, as Keras) copies the averages into the weights.
    ema_momentum : float in [0, 1], default 0.99
    ema_overwrite_frequency : int >= 1 or None
        With ``use_ema``, also copy the averages into the weights after every
        ``ema_overwrite_frequency``-th step.
    loss_scale_factor, gradient_accumulation_steps
        Keras 3's other base arguments, accepted at their defaults only (None: a Keras
        configuration loads) and refused otherwise (ValueError): fastnn scales no loss and
        accumulates no gradients.

    Attributes
    ----------
    iterations : int
        Number of steps applied so far.
    learning_rate : float
        The current learning rate (a schedule is evaluated at ``iterations``). Assigning a
        float replaces it, unless the optimizer was built with a ``LearningRateSchedule``
        (TypeError, as in Keras); a schedule or callable may always be assigned.
    """

    _default_name = "optimizer"
    _n_scratch = 2            # temporaries per parameter that _update_step may use
    _group_max_size = 4096    # parameters up to this many elements are updated in groups

    def __init__(self, learning_rate: LearningRate, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None,
                 use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: Optional[int] = None,
                 loss_scale_factor: Optional[float] = None,
                 gradient_accumulation_steps: Optional[int] = None):
        # Keras 3's other base arguments: accepted at their defaults (so Keras configs load),
        # refused otherwise (fastnn implements none of them)
        for arg, value, default in (("loss_scale_factor", loss_scale_factor, None),
                                    ("gradient_accumulation_steps",
                                     gradient_accumulation_steps, None)):
            keras_default_only(type(self).__name__, arg, value, default)
        self._use_ema = check_bool(use_ema, "use_ema")
        self.ema_momentum = _check_real(ema_momentum, "ema_momentum", low=0.0, high=1.0)
        if ema_overwrite_frequency is not None and (
                isinstance(ema_overwrite_frequency, (bool, np.bool_))
                or not isinstance(ema_overwrite_frequency, (int, np.integer))
                or ema_overwrite_frequency < 1):
            raise ValueError(f"`ema_overwrite_frequency` must be an integer >= 1 or None, "
                             f"received ema_overwrite_frequency={ema_overwrite_frequency!r}")
        self.ema_overwrite_frequency = (None if ema_overwrite_frequency is None
                                        else int(ema_overwrite_frequency))
        self._learning_rate = None
        self._lr_takes_step = False
        self.learning_rate = learning_rate
        self.weight_decay = _check_real(weight_decay, "weight_decay", low=0.0, allow_none=True)
        # exclude_from_weight_decay's arrays and name pattern
        self._wd_exclude_vars: List[np.ndarray] = []
        self._wd_exclude_pattern: Optional["re.Pattern"] = None
        self.clipnorm = _check_real(clipnorm, "clipnorm", low=0.0, low_open=True,
                                    allow_none=True)
        self.clipvalue = _check_real(clipvalue, "clipvalue", low=0.0, low_open=True,
                                     allow_none=True)
        self.global_clipnorm = _check_real(global_clipnorm, "global_clipnorm", low=0.0,
                                           low_open=True, allow_none=True)
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can "
                             f"be set. Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"`name` must be a string, received name={name!r}")
        self.name = self._default_name if name is None else name
        self._iterations = 0
        self._reset_slots()

    # ------------------------------------------------------------------ subclass hooks
    def _state_kinds(self) -> List[str]:
        """The kinds of per-parameter arrays in :meth:`get_state`, in order: the slots, and
        with ``use_ema`` the moving averages."""
        return [name for name, _ in self._slot_specs()] + (["average"] if self.use_ema
                                                           else [])

    def _slot_specs(self) -> List[Tuple[str, float]]:
        """``[(slot_name, initial_value), ...]``: the state arrays each parameter gets."""
        return []

    def _step_constants(self, lr: float, t: int) -> tuple:
        """Python floats shared by all parameters for step number ``t`` (1-based)."""
        return (lr,)

    def _update_step(self, param: np.ndarray, grad: np.ndarray, slots: tuple,
                     scratch: tuple, c: tuple) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ learning rate
    @property
    def learning_rate(self) -> float:
        """The current learning rate (a schedule's value at this step), a float that also
        takes Keras 3's variable idioms: ``.numpy()``, and ``.assign(value)``, which sets
        this optimizer's learning rate (``optimizer.learning_rate = value``)."""
        return _LearningRateValue(self._current_learning_rate(), self)

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        if isinstance(value, LearningRateSchedule):
            self._learning_rate, self._lr_takes_step = value, True
        elif callable(value) and not isinstance(value, (int, float, np.number)):
            self._learning_rate, self._lr_takes_step = value, _takes_step(value)
        else:
            if isinstance(self._learning_rate, LearningRateSchedule):
                raise TypeError("This optimizer was created with a `LearningRateSchedule` "
                                "as its `learning_rate`, hence its learning rate is not "
                                "settable to a float. Assign another schedule, or create "
                                "the optimizer with a float `learning_rate`.")
            self._learning_rate = _check_real(value, "learning_rate", low=0.0)
            self._lr_takes_step = False

    def _current_learning_rate(self) -> float:
        lr = self._learning_rate
        if type(lr) is float:
            return lr
        return float(lr(self._iterations) if self._lr_takes_step else lr())

    @property
    def iterations(self) -> int:
        return self._iterations

    @property
    def use_ema(self) -> bool:
        """Whether a moving average of the weights is kept (see the class docstring)."""
        return self._use_ema

    @use_ema.setter
    def use_ema(self, value: bool) -> None:
        value = check_bool(value, "use_ema")
        if value != self._use_ema and self.built:
            raise ValueError("use_ema cannot change once the optimizer is built (its state "
                             "holds the averages or not): create a new optimizer")
        self._use_ema = value

    def exclude_from_weight_decay(self, var_list: Optional[Sequence[np.ndarray]] = None,
                                  var_names: Optional[Sequence[str]] = None) -> None:
        """Keep ``weight_decay`` off some parameters (Keras 3's method; AdamW users leave
        the biases and normalization scales alone with ``var_names=["bias", "gamma",
        "beta"]``).

        Parameters
        ----------
        var_list : sequence of ndarray, optional
            Parameters excluded, by identity (``model.layers[0].bias``, say).
        var_names : sequence of str, optional
            Regular expressions: a weight whose name (a layer's ``"kernel"``, ``"bias"``,
            ``"gamma"``, ...) contains a match (``re.search``, as Keras) is excluded. A
            model's weights have names (``fit``, ``train_on_batch``); arrays given straight
            to :meth:`apply` have none, so only ``var_list`` reaches those.

        Raises
        ------
        ValueError
            Once the optimizer is built (its first step), as Keras.
        """
        if self.built:
            raise ValueError("exclude_from_weight_decay() can only be configured before the "
                             "optimizer is built (its first step)")
        arrays = list(var_list or [])
        for i, v in enumerate(arrays):
            if not isinstance(v, np.ndarray):
                raise TypeError(f"var_list[{i}] must be a parameter array, received "
                                f"{type(v).__name__}")
        names = list(var_names or [])
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise TypeError(f"var_names[{i}] must be a str, received {n!r}")
        self._wd_exclude_vars = arrays
        self._wd_exclude_pattern = re.compile("|".join(names)) if names else None

    def _decays(self, params: Sequence[np.ndarray]) -> List[bool]:
        """Per parameter: whether weight decay applies (not excluded by
        :meth:`exclude_from_weight_decay`)."""
        owners = self._param_owners
        names = ([name for _, name in owners] if owners is not None
                 and len(owners) == len(params) else None)
        pattern = self._wd_exclude_pattern
        return [not (any(p is v for v in self._wd_exclude_vars) or (
            pattern is not None and names is not None and pattern.search(str(names[i]))
            is not None)) for i, p in enumerate(params)]

    # ------------------------------------------------------------------ building
    def _reset_slots(self) -> None:
        self._shapes: Optional[List[tuple]] = None      # per param, once built
        self._dtypes: Optional[List[np.dtype]] = None
        self._slots: Dict[str, List[np.ndarray]] = {}  # slot name -> one array per param
        self._param_slots: List[tuple] = []             # per param: its slots, in spec order
        self._slot_names: List[str] = []
        self._dtypes_in_use: Tuple[np.dtype, ...] = ()
        self._laid_out = False                          # True once _make_scratch ran
        self._solo_units: List[tuple] = []              # (index, slots, temporaries)
        self._groups: List[tuple] = []                  # small params updated together
        self._decay: List[bool] = []                    # per param: weight decay applies
        self._clip_bufs: Optional[List[np.ndarray]] = None
        self._variables: Optional[List[np.ndarray]] = None  # build()'s, for apply(grads)
        self._ema: Optional[List[np.ndarray]] = None    # per param, with use_ema
        self._ema_tmp: Optional[Dict[np.dtype, np.ndarray]] = None  # _update_ema's work
        # What each parameter is, for a model that trains with this optimizer
        # (Sequential: (layer, weight name) pairs); None when not known.
        self._param_owners: Optional[List[Any]] = None

    @property
    def built(self) -> bool:
        """Whether the slots exist (after the first :meth:`apply`, :meth:`build` or a
        :meth:`set_state` that carried slots)."""
        return self._shapes is not None

    def build(self, variables: Sequence[np.ndarray]) -> None:
        """Create the slots (and temporaries) for ``variables``; :meth:`apply` calls this on
        its first call. Calling it again on a built optimizer does nothing.

        Parameters
        ----------
        variables : list of float ndarray
            The parameters the optimizer will update, in the order they will be passed;
            ``apply(grads)`` without ``trainable_variables`` updates these arrays.
        """
        if self.built:
            return
        params = list(variables)
        for i, p in enumerate(params):
            self._check_param(i, p, "variables")
        shapes = [p.shape for p in params]
        dtypes = [p.dtype for p in params]
        slots = {name: [_full_aligned(s, init, d) for s, d in zip(shapes, dtypes)]
                 for name, init in self._slot_specs()}
        self._install(shapes, dtypes, slots)
        self._variables = params

    def _keep_params(self, indices: Sequence[int]) -> None:
        """Keep the slots of parameters ``indices`` only, in that order (a model whose
        trainable weights became a subset of those this optimizer was built for: Keras
        goes on updating the ones left with their moments); the step count stays."""
        slots = {name: [self._slots[name][i].copy() for i in indices]
                 for name in self._slot_names}
        shapes = [self._shapes[i] for i in indices]
        dtypes = [self._dtypes[i] for i in indices]
        ema = None if self._ema is None else [self._ema[i].copy() for i in indices]
        self._reset_slots()
        self._install(shapes, dtypes, slots, ema)

    def _install(self, shapes, dtypes, slots, ema=None) -> None:
        self._shapes, self._dtypes, self._slots = list(shapes), list(dtypes), slots
        # the weights' moving averages (use_ema): set from the weights at the first step
        self._ema = None if not self.use_ema else ema if ema is not None else [
            np.zeros(s, d) for s, d in zip(self._shapes, self._dtypes)]
        self._ema_tmp = None
        self._dtypes_in_use = tuple(dict.fromkeys(self._dtypes))  # distinct, in order
        names = [name for name, _ in self._slot_specs()]
        self._slot_names = names
        self._param_slots = [tuple(slots[name][i] for name in names)
                             for i in range(len(self._shapes))]
        self._laid_out = False
        self._clip_bufs = None

    def _make_scratch(self, params: Sequence[np.ndarray]) -> None:
        """Lay out the per-step work (once, before the first step), for ``params``.

        * Parameters larger than ``_group_max_size`` elements are updated one by one, with
          temporaries that are views of ``_n_scratch`` flat buffers per dtype (sized for the
          largest unit), so no step allocates.
        * Smaller ones are *grouped* per dtype: their slots move into one flat array per
          slot kind, and each step copies the group's params and grads into flat buffers,
          runs the update once on the whole group and copies the params back. A NumPy call
          costs about a microsecond whatever the size, so this replaces ~10 calls per small
          parameter (biases, normalization scales) by 3 copies. The arithmetic is
          elementwise and identical, so the results are bit-for-bit the same.
        """
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self._shapes]
        self._decay = self._decays(params)
        small: Dict[tuple, List[int]] = {}  # per dtype and decay (a group decays or not)
        for i, (n, d) in enumerate(zip(sizes, self._dtypes)):
            if n <= self._group_max_size:
                small.setdefault((d, self._decay[i]), []).append(i)
        groups = [idx for idx in small.values() if len(idx) > 1]
        grouped = {i for idx in groups for i in idx}
        solo = [i for i in range(len(sizes)) if i not in grouped]

        need: Dict[np.dtype, int] = {}
        for i in solo:
            need[self._dtypes[i]] = max(need.get(self._dtypes[i], 0), sizes[i])
        for idx in groups:
            d = self._dtypes[idx[0]]
            need[d] = max(need.get(d, 0), sum(sizes[i] for i in idx))
        bufs = {d: [np.empty(n, dtype=d) for _ in range(self._n_scratch)]
                for d, n in need.items()}

        def scratch_for(shape, n, d):
            return tuple(b[:n].reshape(shape) for b in bufs[d])

        self._solo_units = [(i, self._param_slots[i],
                             scratch_for(self._shapes[i], sizes[i], self._dtypes[i]))
                            for i in solo]
        self._groups = []
        names = self._slot_names
        for idx in groups:
            d, total = self._dtypes[idx[0]], sum(sizes[i] for i in idx)
            offsets = np.cumsum([0] + [sizes[i] for i in idx]).tolist()

            def views(flat, idx=idx, offsets=offsets):
                return [flat[offsets[j]:offsets[j + 1]].reshape(self._shapes[i])
                        for j, i in enumerate(idx)]

            flat_slots = []
            for name in names:
                flat = np.empty(total, dtype=d)
                for j, (i, v) in enumerate(zip(idx, views(flat))):
                    np.copyto(v, self._slots[name][i])
                    self._slots[name][i] = v        # the slot now lives in the flat array
                flat_slots.append(flat)
            for i in idx:
                self._param_slots[i] = tuple(self._slots[name][i] for name in names)
            pflat, gflat = np.empty(total, dtype=d), np.empty(total, dtype=d)
            self._groups.append((idx, pflat, gflat, views(pflat), views(gflat),
                                 tuple(flat_slots), scratch_for((total,), total, d)))
        self._laid_out = True

    @staticmethod
    def _check_param(i: int, p, name: str = "trainable_variables") -> None:
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{name}[{i}] must be a numpy ndarray (updated in place), "
                            f"received {type(p).__name__}")
        if p.dtype not in _PARAM_DTYPES:
            raise TypeError(f"{name}[{i}] must be float32 or float64 (native byte order), "
                            f"received dtype {p.dtype.str if p.dtype.kind == 'f' else p.dtype}"
                            f"; cast it first, e.g. p.astype(np.float32)")
        if not p.flags.writeable:
            raise ValueError(f"{name}[{i}] is read-only; the optimizer updates it in place")

    # ------------------------------------------------------------------ stepping
    def _slots_stale(self) -> bool:
        """Whether the hyperparameters now need other slots than the built ones."""
        return [name for name, _ in self._slot_specs()] != self._slot_names

    def _clips(self) -> bool:
        """Whether gradients are clipped before the update."""
        return (self.clipnorm is not None or self.global_clipnorm is not None
                or self.clipvalue is not None)

    def apply(self, grads: Sequence[np.ndarray],
              trainable_variables: Optional[Sequence[np.ndarray]] = None) -> None:
        """One optimization step (Keras 3's signature): update every
        ``trainable_variables[i]`` in place from ``grads[i]``.

        Parameters
        ----------
        grads : list of array_like
            ``grads[i]`` has ``trainable_variables[i].shape``; it is read, never modified,
            clipped (``clipnorm``, ...) in its own dtype and then cast to the parameter's
            if it differs, as Keras does. An empty list (no parameters) does nothing.
        trainable_variables : list of float ndarray, optional
            The parameters, in the same order at every call; each is modified in place
            (never rebound), so arrays shared with layers see the update. Default: the
            arrays given to :meth:`build` (as in Keras; ValueError if it was not called).

        Raises
        ------
        ValueError
            If the number of arrays or a shape differs from the first call (the message
            names the index), or a parameter is read-only.
        TypeError
            If a parameter is not a floating ndarray.
        """
        if trainable_variables is None:
            if self._variables is None:
                raise ValueError("apply(grads) without `trainable_variables` updates the "
                                 "arrays given to build(variables), but build() was not "
                                 "called; pass them: apply(grads, trainable_variables)")
            trainable_variables = self._variables
        params = trainable_variables
        n = len(params)
        if len(grads) != n:
            raise ValueError(f"apply() received {len(grads)} grads but {n} "
                             f"trainable_variables; they must match one-to-one")
        if n == 0:     # nothing to update: no step (as Keras; it built for 0 parameters)
            return
        if self._shapes is None:
            for i, p in enumerate(params):
                self._check_param(i, p)         # named as apply's argument
            self.build(params)
        elif n != len(self._shapes):
            raise ValueError(f"this optimizer was built for {len(self._shapes)} parameters "
                             f"but apply() received {n}; create a new optimizer for a new "
                             f"set of parameters")
        if not self._laid_out:
            self._make_scratch(params)
        if self._slots_stale():
            raise ValueError(f"{type(self).__name__}'s hyperparameters were changed after its "
                             f"slots were built ({self._slot_names}), in a way that needs "
                             f"other slots; set them before the first step or create a new "
                             f"optimizer")
        shapes, dtypes = self._shapes, self._dtypes
        grads = list(grads)
        for i in range(n):
            p, g = params[i], grads[i]
            if type(p) is not np.ndarray and not isinstance(p, np.ndarray):
                self._check_param(i, p)
            if p.shape != shapes[i] or p.dtype != dtypes[i]:
                raise ValueError(f"trainable_variables[{i}] has shape {p.shape} and dtype "
                                 f"{p.dtype}, but "
                                 f"the optimizer's slots for index {i} were built for shape "
                                 f"{shapes[i]} and dtype {dtypes[i]}")
            if g is None:
                raise ValueError(f"grads[{i}] is None: trainable_variables[{i}] has no "
                                 f"gradient (Keras skips such a variable with a warning; "
                                 f"fastnn's optimizer steps every parameter it was built "
                                 f"for: pass zeros, or leave the variable out of both lists "
                                 f"from the first step on)")
            if type(g) is not np.ndarray:
                g = grads[i] = np.asarray(g)
            if g.shape != shapes[i]:
                raise ValueError(f"grads[{i}] has shape {g.shape} but "
                                 f"trainable_variables[{i}] has shape {shapes[i]}")
        if self._clips():    # in the gradients' own dtypes (Keras casts them later)
            grads = self._clip_gradients(grads)
        for i in range(n):
            if grads[i].dtype != dtypes[i]:    # Keras casts the gradient to the param dtype
                grads[i] = grads[i].astype(dtypes[i])
        lr = self._current_learning_rate()
        wd = self.weight_decay
        c = self._step_constants(lr, self._iterations + 1)
        update = self._update_step
        decay = self._decay
        for i, slots, scratch in self._solo_units:
            p = params[i]
            if wd and decay[i]:                     # param -= param * wd * lr, as Keras
                t = np.multiply(p, wd, out=scratch[0])
                t *= lr
                p -= t
            update(p, grads[i], slots, scratch, c)
        for idx, pflat, gflat, pviews, gviews, slots, scratch in self._groups:
            for i, pv, gv in zip(idx, pviews, gviews):
                np.copyto(pv, params[i])
                np.copyto(gv, grads[i])
            if wd and decay[idx[0]]:
                t = np.multiply(pflat, wd, out=scratch[0])
                t *= lr
                pflat -= t
            update(pflat, gflat, slots, scratch, c)
            for i, pv in zip(idx, pviews):
                np.copyto(params[i], pv)
        if self.use_ema:
            self._update_ema(params)
        self._iterations += 1

    def _update_ema(self, params: Sequence[np.ndarray]) -> None:
        """Keras 3's moving average after a step: ``average = m * average + (1 - m) *
        param`` in the parameter's dtype, ``m = ema_momentum`` (0 at the first step); every
        ``ema_overwrite_frequency``-th step the parameters take their averages."""
        tmp = self._ema_tmp
        if tmp is None:      # one work array per dtype, the largest parameter's size
            tmp = self._ema_tmp = {}
            for avg in self._ema:
                if tmp.get(avg.dtype, np.empty(0)).size < avg.size:
                    tmp[avg.dtype] = np.empty(avg.size, avg.dtype)
        for p, avg in zip(params, self._ema):
            m = p.dtype.type(0.0 if self._iterations == 0 else self.ema_momentum)
            t = tmp[p.dtype][:p.size].reshape(p.shape)
            np.multiply(p, p.dtype.type(1) - m, out=t)       # each product rounded, as
            avg *= m                                          # Keras's m * average +
            avg += t                                          # (1 - m) * weight
        freq = self.ema_overwrite_frequency
        if freq and (self._iterations + 1) % freq == 0:
            for p, avg in zip(params, self._ema):
                np.copyto(p, avg)

    def finalize_variable_values(self, var_list: Optional[Sequence[np.ndarray]] = None
                                 ) -> None:
        """With ``use_ema``, copy the moving averages into the parameters (Keras 3; ``fit``
        calls it at its end). ``var_list``: the parameters, in the order of the steps;
        default the arrays given to :meth:`build`. Nothing to do without ``use_ema`` or
        before the first step."""
        if not self.use_ema or self._ema is None or self._iterations == 0:
            return
        if var_list is None:
            var_list = self._variables or []
        var_list = list(var_list)
        if len(var_list) != len(self._ema):
            raise ValueError(f"var_list has {len(var_list)} arrays but the optimizer keeps "
                             f"the averages of {len(self._ema)} parameters")
        for p, avg in zip(var_list, self._ema):
            np.copyto(p, avg)

    def apply_gradients(self, grads_and_vars: Sequence[Tuple[np.ndarray, np.ndarray]]) -> int:
        """Keras-style alias: ``apply_gradients([(grad, param), ...])``.

        Returns
        -------
        int
            ``iterations`` after the step.
        """
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"grads_and_vars[{i}] must be a (grad, param) pair, "
                                f"received {type(pair).__name__}")
        self.apply([g for g, _ in pairs], [p for _, p in pairs])
        return self._iterations

    def _clip_gradients(self, grads: List[np.ndarray]) -> List[np.ndarray]:
        """Clipped copies of ``grads`` (written into preallocated buffers; a gradient that
        needs no change is passed through as is)."""
        if self._clip_bufs is None:
            self._clip_bufs = [np.empty(s, dtype=d) for s, d in zip(self._shapes, self._dtypes)]
        bufs = self._clip_bufs
        out = list(grads)
        if self.clipnorm is not None:
            c = self.clipnorm
            for i, g in enumerate(grads):
                norm = math.sqrt(float(np.vdot(g, g)))
                if not norm <= c:  # also NaN/inf norms, which then propagate as in Keras
                    np.multiply(g, c, out=bufs[i])
                    bufs[i] /= norm
                    out[i] = bufs[i]
        elif self.global_clipnorm is not None:
            c = self.global_clipnorm
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
            if not norm <= c:
                scale = c / norm if math.isfinite(norm) else math.nan
                for i, g in enumerate(grads):
                    np.multiply(g, scale, out=bufs[i])
                    out[i] = bufs[i]
        else:
            v = self.clipvalue
            for i, g in enumerate(grads):
                np.clip(g, -v, v, out=bufs[i])
                out[i] = bufs[i]
        return out

    # ------------------------------------------------------------------ state
    def get_state(self) -> List[np.ndarray]:
        """Copies of the optimizer's state: ``[iterations]`` followed by the slots, grouped
        by slot kind in ``_slot_specs`` order, one array per parameter within a kind, and
        with ``use_ema`` the weights' moving averages, one per parameter, last.

        Returns
        -------
        list of ndarray
            ``state[0]`` is a 0-d int64 array; the rest have the parameters' shapes and
            dtypes (none before the optimizer is built).
        """
        state = [np.array(self._iterations, dtype=np.int64)]
        if self.built:
            for name in self._slot_names:
                state.extend(a.copy() for a in self._slots[name])
            if self._ema is not None:          # use_ema: the averages, after the slots
                state.extend(a.copy() for a in self._ema)
        return state

    def set_state(self, state: Sequence[np.ndarray]) -> None:
        """Restore :meth:`get_state`'s output; training then continues bit-identically.

        On a built optimizer the arrays must match its slots' shapes. On an unbuilt one the
        slots are created from ``state`` (the next :meth:`apply` then checks the parameters
        against them).

        Raises
        ------
        ValueError
            On a wrong number of arrays, a negative or non-integer ``iterations``, or a shape
            mismatch (the message names the index into ``state``).
        """
        state = list(state)
        if not state:
            raise ValueError("`state` must start with the iteration count; received an "
                             "empty list")
        it = np.asarray(state[0])
        if it.shape != () or it.dtype.kind not in "iuf" or not np.isfinite(it) or \
                it != np.floor(it) or it < 0:
            raise ValueError(f"state[0] must be the iteration count (a non-negative integer), "
                             f"received {state[0]!r}")
        specs = self._slot_specs()
        arrays = [np.asarray(a) for a in state[1:]]
        kinds = self._state_kinds()
        if self.built:
            n = len(self._shapes)
            targets = [self._slots[name] for name in self._slot_names] + (
                [self._ema] if self.use_ema else [])
            expected = len(targets) * n
            if len(arrays) != expected:
                raise ValueError(f"`state` must hold 1 + {expected} arrays for this "
                                 f"optimizer ({len(targets)} slot kinds {kinds} x {n} "
                                 f"parameters), received {len(state)}")
            for k, a in enumerate(arrays):
                i = k % n
                if a.shape != self._shapes[i]:
                    raise ValueError(f"state[{k + 1}] has shape {a.shape}, but the slot it "
                                     f"restores (parameter {i}) has shape {self._shapes[i]}")
            for k, target in enumerate(targets):
                for i, slot in enumerate(target):
                    np.copyto(slot, arrays[k * n + i], casting="same_kind")
        elif arrays:
            if not kinds or len(arrays) % len(kinds):
                raise ValueError(f"`state` holds {len(arrays)} slot arrays, which is not a "
                                 f"multiple of this optimizer's {len(kinds)} slot kinds "
                                 f"{kinds}")
            n = len(arrays) // len(kinds)
            for k, a in enumerate(arrays):
                if a.dtype not in _PARAM_DTYPES:
                    raise TypeError(f"state[{k + 1}] must be a float32 or float64 array "
                                    f"(native byte order), received dtype {a.dtype.str}")
                ref = arrays[k % n]
                if a.shape != ref.shape or a.dtype != ref.dtype:
                    raise ValueError(f"state[{k + 1}] has shape {a.shape}/{a.dtype} but the "
                                     f"first slot kind has {ref.shape}/{ref.dtype} for "
                                     f"parameter {k % n}")
            slots = {name: [arrays[k * n + i].copy() for i in range(n)]
                     for k, (name, _) in enumerate(specs)}
            ema = [a.copy() for a in arrays[len(specs) * n:]] if self.use_ema else None
            self._install([a.shape for a in arrays[:n]], [a.dtype for a in arrays[:n]], slots,
                          ema)
        self._iterations = int(it)

    # ------------------------------------------------------------------ config
    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments (a schedule ``learning_rate`` is serialized to a dict; a
        plain callable is stored as is). ``type(opt).from_config(opt.get_config())`` makes
        an equivalent optimizer without state."""
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = _serialize_schedule(lr)
        cfg = {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
               "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
               "clipvalue": self.clipvalue}
        if self.use_ema:    # (only then: a user's subclass may not take these arguments)
            cfg.update(use_ema=True, ema_momentum=self.ema_momentum,
                       ema_overwrite_frequency=self.ema_overwrite_frequency)
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Dict[str, type] = None):
        """Create an optimizer from :meth:`get_config`'s output. A tf.keras 2 config's
        ``decay`` is dropped with a warning, as Keras 3 does."""
        config = dict(config)
        if "decay" in config:
            config.pop("decay")
            warnings.warn("Argument `decay` is no longer supported and will be ignored.",
                          UserWarning, stacklevel=2)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _deserialize_schedule(config["learning_rate"],
                                                            custom_objects)
        return cls(**config)

    def __repr__(self) -> str:
        cfg = self.get_config()
        cfg.pop("name", None)
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if v is not None)
        return f"{type(self).__name__}({args})"
