"""The compiled training step of a stack of Dense layers (the C backend's ``dense_step``).

A Sequential model of Flatten/Input layers followed by Dense layers (hidden activations
relu, linear, sigmoid or tanh, each hidden one optionally followed by a Dropout; the last
one softmax with a categorical cross-entropy) trains in one C call per step; a linear Dense
followed by an Activation layer counts as a Dense with that activation (Keras's
``Dense(n)``, ``Activation("relu")``): forward, loss and
backward run the kernels the layers call, in the same order with the same arguments, so
the gradients are bitwise those of the layer-by-layer step (``tests/test_models.py``
checks it). Dropout masks are drawn in Python, by the Dropout layers themselves, in layer
order: the same random numbers. A plain Adam or SGD (no weight decay, no clipping) runs
inside the call too, each layer's update once its gradients are complete, with the
optimizer's own slots and constants and the operations of its ``apply`` (the same bits);
any other optimizer runs its ``apply`` after the call. At batch 32 the interpreter
between the ~15 kernel calls of the layer-by-layer step took longer than the arithmetic.

``fit`` goes further when nothing needs the batches one by one (no callback with batch
hooks but the progress bar, metrics that count, plain Adam or SGD, no sample weights): a
run of up to 8192 rows' worth of full batches is one C call
(:meth:`DenseStep.run_steps`), which gathers each batch's rows itself and keeps a second
thread spinning through the run to share the large products and updates (waking a
sleeping OpenMP thread per product cost as much as the product). The same bits as one
call per step (tested).

Everything else (other layers or activations, Dropout with a noise_shape, regularizers,
frozen layers, sample or class weights, the Numba and NumPy backends) takes the
layer-by-layer path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _backend
from . import losses as _losses
from .activations import Sigmoid, Softmax, Tanh
from .layers.core import FUSED, Activation, Dense, Dropout, Flatten, InputLayer
from .optimizers.adam import Adam
from .optimizers.sgd import SGD
from .utils._arrays import empty_aligned


# The activation kernels a hidden layer may end in within the step: those whose derivative
# comes from the output alone (all the step keeps)
_KERNEL_ACTS = {Sigmoid: "sigmoid", Tanh: "tanh"}


def _act_code(act) -> Optional[int]:
    """The activation ``act``'s code in fnn_dense_step (fastnn.h): identity 0, relu 1, or
    FNN_DENSE_ACT_KIND + the activation kernel's kind; None where the step has none."""
    kernel = FUSED.get(type(act))
    if kernel is not None:
        return 1 if kernel == "relu" else 0
    name = _KERNEL_ACTS.get(type(act))
    if name is None:
        return None
    from .backends import c_backend
    return c_backend.lib.FNN_DENSE_ACT_KIND + c_backend._ACT_KIND[name]


class DenseStep:
    """One model's compiled step: the C call with its pointers, and the buffers per batch
    size. Build with :meth:`build` (None when the model is not eligible); check
    :meth:`valid` before each :meth:`run`."""

    def __init__(self, model, dense, acts, dropout, loss):
        from .backends import c_backend
        self._cb = c_backend
        self._layers = tuple(model._layers)
        self._loss = loss
        self._dense = dense
        self._dropout = dropout          # per Dense: the Dropout that follows it, or None
        # the arrays the pointers below point into, kept to check them before each step
        self._arrays = [(l.kernel, l.bias, l.grads["kernel"], l.grads.get("bias"))
                        for l in dense]
        dt = self.dtype = dense[0].dtype
        ffi = c_backend.ffi
        ctype = "float" if dt == np.float32 else "double"
        self._dims = np.array([dense[0].in_features] + [l.units for l in dense], np.int64)
        self._c_dims = ffi.from_buffer("int64_t[]", self._dims)
        self._act_layers = acts          # per Dense: the layer holding its activation
        self._acts = self._activations(dense, acts)
        self._c_act = ffi.new("int[]", [_act_code(l.activation) for l in acts[:-1]] + [0])
        ptr = c_backend._ptr

        def ptrs(arrays):
            return ffi.new(f"{ctype} *[]", [ffi.NULL if a is None else ptr(a)
                                            for a in arrays])
        self._ptrs = ptrs
        self._c_w = ptrs([a[0] for a in self._arrays])
        self._c_b = ptrs([a[1] for a in self._arrays])
        self._c_dw = ptrs([a[2] for a in self._arrays])
        self._c_db = ptrs([a[3] for a in self._arrays])
        self._sparse = isinstance(loss, _losses.SparseCategoricalCrossentropy)
        self._step = c_backend._fn("dense_step", dt)
        self._steps = c_backend._fn("dense_steps", dt)
        # the optimizers the C step runs itself: fnn_dense_step's opt for each
        lib = c_backend.lib
        self._opt_none = lib.FNN_OPT_NONE
        self._opt_kinds = {Adam: lib.FNN_OPT_ADAM, SGD: lib.FNN_OPT_SGD}
        self._ws_size = c_backend._fn("dense_step_ws", dt)
        self._by_n: dict = {}
        self._opt_key = None             # (optimizer, its slot tuples): what _c_slots holds
        self._c_slots = None
        # the weights in the order of the model's parameter list
        self._order = [a for w, b, _, _ in self._arrays for a in (w, b) if a is not None]
        self._no_masks = ptrs([None] * len(dense))

    @classmethod
    def build(cls, model) -> Optional["DenseStep"]:
        """The compiled step for ``model`` (compiled, built), or None if it is not
        eligible: see the module docstring."""
        if _backend.active_name() != "c":
            return None
        kind, loss = model._fused_output()
        if kind != "softmax" or not isinstance(loss, _losses.CategoricalCrossentropy) \
                or loss.label_smoothing:
            return None
        layers = model._layers
        i = 0
        # leading layers that leave x's memory as it is (a channels_first Flatten of a
        # 3-D or 4-D input moves the channels last first: not skipped)
        while i < len(layers) and (type(layers[i]) is InputLayer or (
                type(layers[i]) is Flatten and not (
                    layers[i].data_format == "channels_first"
                    and len(layers[i].input_shape) >= 3))):
            i += 1
        dense, acts, dropout = [], [], []
        for l in layers[i:]:
            if type(l) is Dense:
                dense.append(l)
                acts.append(l)
                dropout.append(None)
            elif (type(l) is Activation and dense and acts[-1] is dense[-1]
                  and dropout[-1] is None and FUSED.get(type(dense[-1].activation)) ==
                  "identity"):
                acts[-1] = l       # a linear Dense's Activation layer: its activation
            elif (type(l) is Dropout and l.noise_shape is None and dense
                  and dropout[-1] is None):
                dropout[-1] = l
            else:
                return None
        if not dense or dropout[-1] is not None:
            return None
        dt = dense[0].dtype
        if dt not in (np.float32, np.float64) or len(dense[0].input_shape) != 2:
            return None
        for l in dense:
            if not l.trainable or l._regularizers or l.dtype != dt:
                return None
        if any(_act_code(l.activation) is None for l in acts[:-1]):
            return None
        if not isinstance(acts[-1].activation, Softmax):
            return None
        return cls(model, dense, acts, dropout, loss)

    @staticmethod
    def _activations(dense, acts):
        """The activations' codes (the last one's class), and whether each Dense whose
        Activation layer the step took is still linear."""
        return (tuple(_act_code(l.activation) for l in acts[:-1]) +
                (type(acts[-1].activation),) +
                tuple(a is d or FUSED.get(type(d.activation)) == "identity"
                      for d, a in zip(dense, acts)))

    def valid(self, model) -> bool:
        """Whether this step still describes ``model``: same layers, loss, backend,
        activations and weight and gradient arrays (replacing one rebinds it: the pointers
        would go stale), nothing frozen or regularized since."""
        if model._fused_output()[1] is not self._loss or tuple(model._layers) != self._layers:
            return False
        if _backend.active_name() != "c":
            return False
        if any(d is not None and d.noise_shape is not None for d in self._dropout):
            return False
        if self._activations(self._dense, self._act_layers) != self._acts:
            return False
        for l, (w, b, gw, gb) in zip(self._dense, self._arrays):
            if (l.kernel is not w or l.bias is not b or l.grads["kernel"] is not gw
                    or l.grads.get("bias") is not gb or not l.trainable or l._regularizers):
                return False
        return True

    def accepts(self, x, y, sw) -> bool:
        """Whether a batch can take the compiled step (else the layer-by-layer one)."""
        if sw is not None or type(x) is not np.ndarray or x.dtype != self.dtype:
            return False
        if not x.flags.c_contiguous or len(x) == 0 or x.size != len(x) * self._dims[0]:
            return False
        if self._sparse:
            return y.dtype.kind in "iu" and (y.ndim == 1 or y.shape[1:] == (1,))
        return y.shape == (len(x), self._dims[-1])

    def _buffers(self, n: int):
        bufs = self._by_n.get(n)
        if bufs is None:
            dims, dt = self._dims, self.dtype

            def new(*shape):   # made once per batch size, 64-byte aligned as layers' buffers
                return empty_aligned(shape, dt, min_bytes=0)
            ys = [new(n, d) for d in dims[1:]]
            yds = [new(n, d) if drop is not None else None
                   for d, drop in zip(dims[1:], self._dropout)]
            dzs = [new(n, d) for d in dims[1:]]
            dxs = [None] + [new(n, d) for d in dims[1:-1]]
            probs, loss = new(n, dims[-1]), new(n)
            ptrs = self._ptrs
            bufs = (ys, yds, dzs, dxs, probs, loss, ptrs(ys), ptrs(yds), ptrs(dzs),
                    ptrs(dxs), self._cb._ptr(probs), self._cb._ptr(loss))
            if len(self._by_n) > 4:      # batch sizes seen: a full and a last batch
                self._by_n.clear()
            self._by_n[n] = bufs
        return bufs

    def _opt_slots(self, optimizer, params):
        """``(kind, slot pointers)`` (6 per layer: three slots of the weights, then three of
        the bias, NULL where absent) to run ``optimizer`` inside the step, or None when it
        cannot: not a plain, built Adam or SGD (no weight decay, no clipping, no moving
        average of the weights), or
        ``params`` not the Dense layers' weights in order."""
        kind = self._opt_kinds.get(type(optimizer))
        if (kind is None or optimizer.weight_decay or optimizer._clips() or optimizer.use_ema
                or not optimizer.built or not optimizer._laid_out
                or optimizer._slots_stale()):
            return None
        order = self._order
        if len(params) != len(order) or any(p is not q for p, q in zip(params, order)):
            return None
        slots = optimizer._param_slots
        if len(slots) != len(params):        # built for other parameters
            return None
        key = (optimizer, tuple(slots))
        if self._opt_key is None or self._opt_key[0] is not optimizer or any(
                a is not b for a, b in zip(self._opt_key[1], key[1])):
            it = iter(slots)
            flat = []
            for w, b, _, _ in self._arrays:
                for present in (True, b is not None):
                    s = next(it) if present else ()
                    flat += [s[i] if len(s) > i else None for i in range(3)]
            self._c_slots = self._ptrs(flat)
            self._opt_key = key
        return kind, self._c_slots

    def _opt_constants(self, optimizer, t: int) -> Tuple[float, float, float, float]:
        """The C update's k0..k3 for the optimizer's step t (1-based; its learning rate
        at its current iteration): Adam's alpha in the weights' dtype, 1 - beta_1,
        1 - beta_2 and epsilon, or SGD's learning rate, momentum and nesterov."""
        c = optimizer._step_constants(optimizer._current_learning_rate(), t)
        if type(optimizer) is Adam:
            alphas, omb1, omb2, eps = c
            return alphas[np.dtype(self.dtype)], omb1, omb2, eps
        lr, momentum, nesterov = c
        return lr, momentum, float(nesterov), 0.0

    def fit_targets(self, x, y) -> Optional[np.ndarray]:
        """The targets of a training set as :meth:`run_steps` takes them (int64 labels, or
        float rows in the weights' dtype), or None when ``x`` / ``y`` cannot be gathered
        from in C (``x`` not a C-contiguous array of the weights' dtype, other targets)."""
        if not (type(x) is np.ndarray and x.dtype == self.dtype and x.flags.c_contiguous
                and len(x) and x.size == len(x) * self._dims[0] and len(y) == len(x)):
            return None
        y = np.asarray(y)
        if self._sparse:
            if y.dtype.kind not in "iu" or not (y.ndim == 1 or y.shape[1:] == (1,)):
                return None
            return np.ascontiguousarray(y.reshape(len(y)), dtype=np.int64)
        if y.shape != (len(x), self._dims[-1]) or y.dtype.kind not in "iuf":
            return None
        return np.ascontiguousarray(y, dtype=self.dtype)

    def can_run_steps(self, optimizer, params) -> bool:
        """Whether several steps can run in one :meth:`run_steps` call: the optimizer runs
        inside the step and its learning rate is a number or a schedule of the step."""
        return (self._opt_slots(optimizer, params) is not None
                and (type(optimizer._learning_rate) is float or optimizer._lr_takes_step))

    def mask_bytes_per_row(self) -> int:
        """Bytes of dropout masks :meth:`run_steps` draws per training row (it holds a
        run's masks at once)."""
        return np.dtype(self.dtype).itemsize * sum(
            l.units for l, drop in zip(self._dense, self._dropout)
            if drop is not None and drop.rate)

    def run_steps(self, x: np.ndarray, targets: np.ndarray, idx: np.ndarray, n: int,
                  optimizer, params) -> Tuple[np.ndarray, np.ndarray]:
        """``len(idx) // n`` training steps in one C call, step s on the rows
        ``idx[s n:(s + 1) n]`` of ``x``: what as many :meth:`run` calls on ``x[idx_s]``,
        ``y[idx_s]`` do (dropout masks drawn in the same order, the optimizer's constants
        per step), bit for bit. Needs :meth:`can_run_steps`; ``targets`` from
        :meth:`fit_targets`; ``idx`` int64 row numbers of ``x`` (not checked here).

        Returns
        -------
        loss : ndarray, shape (steps,)
            Each step's mean loss, as :meth:`run` returns it.
        probs : ndarray, shape (steps * n, classes)
            The softmax outputs, step after step.
        """
        cb, ffi, dt = self._cb, self._cb.ffi, np.dtype(self.dtype)
        nsteps = len(idx) // n
        idx = np.ascontiguousarray(idx[:nsteps * n], dtype=np.int64)
        _, _, _, _, _, _, c_y, c_yd, c_dz, c_dx, _, _ = self._buffers(n)
        k, d = int(self._dims[-1]), int(self._dims[0])
        xb = np.empty((n, d), dt)
        lb = np.empty(n, np.int64)
        tb = np.empty((n, k), dt)
        probs = np.empty((nsteps * n, k), dt)
        loss = np.empty((nsteps, n), dt)
        # dropout masks: step by step, layer by layer, the draws of nsteps run() calls
        masks = [None if drop is None or drop.rate == 0 else np.empty((nsteps, n, l.units), dt)
                 for l, drop in zip(self._dense, self._dropout)]
        if any(m is not None for m in masks):
            for s in range(nsteps):
                for drop, m in zip(self._dropout, masks):
                    if m is not None:
                        drop._mask = drop._draw_mask(m.shape[1:], dt, out=m[s])
        c_mask = self._ptrs(masks) if any(m is not None for m in masks) else self._no_masks
        # the optimizer's constants for each step, as run() computes them at that iteration
        kind, c_slots = self._opt_slots(optimizer, params)
        it0 = optimizer._iterations
        k0 = np.empty(nsteps)
        try:
            for s in range(nsteps):
                optimizer._iterations = it0 + s
                k0[s], k1, k2, k3 = self._opt_constants(optimizer, it0 + s + 1)
        finally:
            optimizer._iterations = it0
        nl = len(self._dense)
        ws = cb._workspace(2 * self._ws_size(n, nl, self._c_dims), self.dtype)  # 2 threads
        sparse = self._sparse
        self._steps(nsteps, cb._iptr(idx), cb._ptr(x),
                    cb._iptr(targets) if sparse else ffi.NULL,
                    ffi.NULL if sparse else cb._ptr(targets), cb._ptr(xb), cb._iptr(lb),
                    cb._ptr(tb), n, nl, self._c_dims, self._c_act, self._c_w, self._c_b,
                    c_mask, c_y, c_yd, c_dz, c_dx, self._c_dw, self._c_db, 1.0 / n,
                    cb._ptr(probs), cb._ptr(loss), kind, c_slots,
                    ffi.from_buffer("double[]", k0), k1, k2, k3, ws)
        optimizer._iterations = it0 + nsteps
        # each step's loss as run() reduces it (_losses._reduce, row by row)
        return np.add.reduce(loss, axis=1, dtype=np.float64) / n, probs

    def run(self, x: np.ndarray, y: np.ndarray, optimizer, params, grads
            ) -> Tuple[float, np.ndarray]:
        """One training step on a batch :meth:`accepts`: fills the Dense layers'
        gradients, updates the weights with ``optimizer`` (``params``, ``grads``: the
        model's lists, as ``optimizer.apply`` takes them) and returns ``(loss, softmax
        output)`` (the latter a buffer reused by the next step)."""
        cb, ffi = self._cb, self._cb.ffi
        n = len(x)
        _, _, _, _, probs, loss, c_y, c_yd, c_dz, c_dx, c_probs, c_loss = self._buffers(n)
        # dropout masks, drawn by the Dropout layers in layer order, as their forward does
        masks = [None if drop is None or drop.rate == 0 else
                 drop._draw_mask((n, l.units), np.dtype(self.dtype))
                 for l, drop in zip(self._dense, self._dropout)]
        for drop, mask in zip(self._dropout, masks):
            if drop is not None:
                drop._mask = mask
        c_mask = self._ptrs(masks) if any(m is not None for m in masks) else self._no_masks
        # the targets as the kernel takes them (these locals keep them alive for the call)
        if self._sparse:
            labels = np.ascontiguousarray(y.reshape(n), dtype=np.int64)
            c_labels, c_t = cb._iptr(labels), ffi.NULL
        else:
            t = np.ascontiguousarray(y, dtype=self.dtype)
            c_labels, c_t = ffi.NULL, cb._ptr(t)
        nl = len(self._dense)
        ws = cb._workspace(self._ws_size(n, nl, self._c_dims), self.dtype)
        inside = self._opt_slots(optimizer, params)
        kind, c_slots, k = self._opt_none, ffi.NULL, (0.0, 0.0, 0.0, 0.0)
        if inside is not None:       # apply's constants, for the step it would make
            kind, c_slots = inside
            k = self._opt_constants(optimizer, optimizer.iterations + 1)
        # the loss's scale, as the layer-by-layer step's (losses._xent_step)
        self._step(n, nl, self._c_dims, self._c_act, self._c_w, self._c_b, c_mask, c_y, c_yd,
                   c_dz, c_dx, self._c_dw, self._c_db, cb._ptr(x), c_labels, c_t, 1.0 / n,
                   c_probs, c_loss, kind, c_slots, *k, ws)
        if inside is None:
            optimizer.apply(grads, params)
        else:
            optimizer._iterations += 1
        return _losses._reduce(loss, None), probs
