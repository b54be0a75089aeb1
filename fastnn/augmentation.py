"""Image augmentation for image batches, as Keras-style preprocessing layers.

Put them first in a model; they transform each training batch at random and are the
identity at inference (``training=False``)::

    model = Sequential([
        Input(shape=(28, 28, 1)),
        RandomFlip("horizontal"),
        RandomTranslation(0.1, 0.1),
        RandomRotation(0.05),
        Conv2D(32, 3, activation="relu"), ...])

Each layer also works on its own: ``RandomRotation(0.1)(x, training=True)``. The same
transforms are available as functions (:func:`random_flip`, :func:`random_shift`,
:func:`random_rotation`, :func:`random_crop`, :func:`center_crop`) for a hand-written
loop. Batches are NHWC, ``(N, H, W, C)``, unless ``data_format="channels_first"`` says
NCHW, ``(N, C, H, W)``, as in Keras; one image, ``(H, W, C)`` or ``(C, H, W)``, is taken
too (a batch of one, returned without the batch axis). Integer images come out float32,
float ones keep their dtype.

Randomness comes from the layer's ``seed`` or fastnn's global generator
(:func:`fastnn.utils.set_random_seed`). Augmentation layers sit before every trainable
layer, so no gradient flows through them; their ``backward`` raises if one is asked for.
"""
from __future__ import annotations

import functools
import numbers
from typing import Optional, Tuple, Union

import numpy as np

from .layers.base import Layer
from .layers.core import _data_format
from .utils import get_rng
from .utils._args import check_int

Factor = Union[float, Tuple[float, float]]
_FILL_MODES = ("reflect", "constant", "nearest", "wrap")


def _one_image_too(fn):
    """Let batch function ``fn`` take one image, (H, W, C) or (C, H, W), as Keras's layers
    do: it runs as a batch of one, and the result drops the batch axis again."""
    @functools.wraps(fn)
    def run(x, *args, **kwargs):
        x = np.asarray(x)
        if x.ndim == 3:
            return fn(x[None], *args, **kwargs)[0]
        return fn(x, *args, **kwargs)
    return run


def _check_nhwc(x, who: str, data_format: Optional[str] = None) -> np.ndarray:
    """``x`` as a float NHWC batch: channels_first input is transposed (a view), integer
    images become float32."""
    df = _data_format(data_format)
    x = np.asarray(x)
    if x.ndim != 4:
        layout = "an NHWC batch (N, H, W, C) or one image (H, W, C)" \
            if df == "channels_last" else "an NCHW batch (N, C, H, W) or one image (C, H, " \
            "W) (data_format='channels_first')"
        raise ValueError(f"{who} expects {layout}, received shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{who} needs numeric images, received dtype {x.dtype}")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x.transpose(0, 2, 3, 1) if df == "channels_first" else x


def _from_nhwc(y: np.ndarray, data_format: Optional[str]) -> np.ndarray:
    """An NHWC result (or a view of one) back in the caller's layout, contiguous."""
    if _data_format(data_format) == "channels_first":
        y = y.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y)


def _range(factor: Factor, name: str, limit: Optional[float] = None) -> Tuple[float, float]:
    """``factor`` as (lower, upper): a number f >= 0 is (-f, f), a pair is itself."""
    if isinstance(factor, numbers.Real) and not isinstance(factor, (bool, np.bool_)):
        if not np.isfinite(factor) or factor < 0:
            raise ValueError(f"{name} must be >= 0 and finite (the range is (-{name}, "
                             f"{name})) or a pair (lower, upper), received {factor!r}")
        lo, hi = -float(factor), float(factor)
    elif isinstance(factor, (tuple, list)) and len(factor) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
            for v in factor):
        lo, hi = float(factor[0]), float(factor[1])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{name} must be finite, received {factor!r}")
    else:
        raise TypeError(f"{name} must be a float or a pair (lower, upper), received {factor!r}")
    if not np.isfinite(hi - lo):       # NumPy's uniform draw would overflow
        raise ValueError(f"{name} must span a finite range (upper - lower), received "
                         f"{factor!r}")
    if lo > hi or (limit is not None and (abs(lo) > limit or abs(hi) > limit)):
        raise ValueError(f"{name} must satisfy lower <= upper"
                         + (f" within [-{limit}, {limit}]" if limit else "") +
                         f", received {factor!r}")
    return lo, hi


def _plain(factor: Factor) -> Factor:
    """A checked factor in Python floats (NumPy scalars made the model's config unsavable
    as JSON), a pair kept a tuple or a list as given."""
    if isinstance(factor, (tuple, list)):
        return type(factor)(float(v) for v in factor)
    return float(factor)


def _check_fill(fill_mode, interpolation, fill_value=0.0) -> None:
    if isinstance(fill_value, (bool, np.bool_)) or not isinstance(fill_value, numbers.Real):
        raise TypeError(f"fill_value must be a number, received fill_value={fill_value!r}")
    if fill_mode not in _FILL_MODES:
        raise ValueError(f"fill_mode must be one of {_FILL_MODES}, received {fill_mode!r}")
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', received "
                         f"{interpolation!r}")


def _fill_index(idx: np.ndarray, size: int, mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """Map integer coordinates outside [0, size) by ``mode``; returns (index, valid)."""
    if mode == "constant":
        valid = (idx >= 0) & (idx < size)
        return np.clip(idx, 0, size - 1), valid
    if mode == "nearest":
        return np.clip(idx, 0, size - 1), np.ones(idx.shape, bool)
    if mode == "wrap":
        return np.mod(idx, size), np.ones(idx.shape, bool)
    # reflect (Keras: d c b a | a b c d | d c b a)
    period = 2 * size
    m = np.mod(idx, period)
    return np.where(m >= size, period - 1 - m, m), np.ones(idx.shape, bool)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """The nearest integers to ``v``, halves away from zero, as int64."""
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def _nearest_index(coord: np.ndarray, size: int, mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest interpolation's source index along one axis of ``size`` pixels, and whether
    it is inside (constant mode). Halves round away from zero (C's round(), TensorFlow's
    image transform: np.rint's halves to even repeated and dropped rows under a shift of
    1.5 pixels). In reflect mode the continuous coordinate is reflected into the image and
    clamped to [0, size - 1] before it is rounded, TensorFlow's order (Keras 3.15's
    RandomTranslation equal at half-pixel shifts; rounding first picked the other pixel
    of such a tie at the edges); the other modes round, then map the index."""
    if mode != "reflect":
        return _fill_index(_round_half_away(coord), size, mode)
    if size <= 1:
        return np.zeros(coord.shape, np.int64), np.ones(coord.shape, bool)
    period = 2.0 * size
    low = coord + period * np.trunc(-coord / period)          # below 0: into (-2n, 0]
    low = np.where(low < -size, low + period, -low - 1)
    high = coord - period * np.trunc(coord / period)          # above n - 1: into [0, 2n)
    high = np.where(high >= size, period - high - 1, high)
    c = np.where(coord < 0, low, np.where(coord > size - 1, high, coord))
    return (np.clip(_round_half_away(np.clip(c, 0, size - 1)), 0, size - 1),
            np.ones(coord.shape, bool))


def affine_transform(x: np.ndarray, matrices: np.ndarray, fill_mode: str = "reflect",
                     fill_value: float = 0.0, interpolation: str = "bilinear") -> np.ndarray:
    """Resample each image of an NHWC batch through its own inverse affine map.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    matrices : ndarray, shape (N, 2, 3)
        For each image, output pixel (row, col) reads input at
        ``matrices[n] @ (row, col, 1)``.
    fill_mode : {"reflect", "constant", "nearest", "wrap"}
    interpolation : {"bilinear", "nearest"}

    Returns
    -------
    ndarray shaped like x
    """
    _check_fill(fill_mode, interpolation, fill_value)
    n, h, w, c = x.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                             indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel(), np.ones(h * w)])          # (3, H*W)
    src = matrices @ grid                                                   # (N, 2, H*W)
    sr, sc = src[:, 0], src[:, 1]
    batch = np.arange(n)[:, None]
    if interpolation == "nearest":
        ri, rv = _nearest_index(sr, h, fill_mode)
        ci, cv = _nearest_index(sc, w, fill_mode)
        out = x[batch, ri, ci]                                              # (N, H*W, C)
        out = np.where((rv & cv)[..., None], out, fill_value)
        return out.reshape(x.shape).astype(x.dtype, copy=False)
    r0, c0 = np.floor(sr).astype(np.int64), np.floor(sc).astype(np.int64)
    fr, fc = (sr - r0)[..., None], (sc - c0)[..., None]
    out = np.zeros((n, h * w, c), dtype=np.float64)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        ri, rv = _fill_index(r0 + dr, h, fill_mode)
        for dc, wc in ((0, 1 - fc), (1, fc)):
            ci, cv = _fill_index(c0 + dc, w, fill_mode)
            vals = np.where((rv & cv)[..., None], x[batch, ri, ci], fill_value)
            out += wr * wc * vals
    return out.reshape(x.shape).astype(x.dtype)


def _check_flip_mode(mode) -> None:
    if mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
        raise ValueError(f"mode must be 'horizontal', 'vertical' or 'horizontal_and_vertical', "
                         f"received {mode!r}")


@_one_image_too
def random_flip(x, mode: str = "horizontal", rng=None,
                data_format: Optional[str] = None) -> np.ndarray:
    """Flip each image of a batch with probability 1/2.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), or (N, C, H, W) with ``data_format="channels_first"``
    mode : {"horizontal", "vertical", "horizontal_and_vertical"}
        "horizontal" flips left-right, "vertical" up-down; "horizontal_and_vertical" flips
        a chosen image both ways (a half turn), as Keras 3 does (tf.keras 2 drew the two
        flips independently).
    rng : int, numpy Generator or None
        A seed or generator; None draws from fastnn's global generator.
    data_format : {None, "channels_last", "channels_first"}

    Returns
    -------
    ndarray, shaped like ``x``: float (integer images become float32)
    """
    _check_flip_mode(mode)
    out = _check_nhwc(x, "random_flip", data_format).copy()
    sel = get_rng(rng).random(len(out)) < 0.5
    if "horizontal" in mode:
        out[sel] = out[sel, :, ::-1]
    if "vertical" in mode:
        out[sel] = out[sel, ::-1]
    return _from_nhwc(out, data_format)


@_one_image_too
def random_shift(x, height_factor: Factor = 0.1, width_factor: Factor = 0.1, rng=None,
                 fill_mode: str = "reflect", fill_value: float = 0.0,
                 interpolation: str = "bilinear",
                 data_format: Optional[str] = None) -> np.ndarray:
    """Translate each image by a random fraction of its height and width.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), or (N, C, H, W) with ``data_format="channels_first"``
    height_factor, width_factor : float or (float, float)
        ``0.1``: a shift drawn from [-10%, 10%] of the height (width); a pair (lower,
        upper) within [-1, 1] gives the range itself.
    rng : int, numpy Generator or None
    fill_mode : {"reflect", "constant", "nearest", "wrap"}
        How pixels from outside the image are filled, as in Keras.
    fill_value : float
        The value of those pixels with ``fill_mode="constant"``.
    interpolation : {"bilinear", "nearest"}
    data_format : {None, "channels_last", "channels_first"}

    Returns
    -------
    ndarray, shaped like ``x``
    """
    x = _check_nhwc(x, "random_shift", data_format)
    lo_h, hi_h = _range(height_factor, "height_factor", 1.0)
    lo_w, hi_w = _range(width_factor, "width_factor", 1.0)
    rng = get_rng(rng)
    n, h, w, _ = x.shape
    dy = rng.uniform(lo_h, hi_h, n) * h
    dx = rng.uniform(lo_w, hi_w, n) * w
    m = np.zeros((n, 2, 3))
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, 0, 2], m[:, 1, 2] = -dy, -dx
    return _from_nhwc(affine_transform(x, m, fill_mode, fill_value, interpolation),
                      data_format)


@_one_image_too
def random_rotation(x, factor: Factor = 0.1, rng=None, fill_mode: str = "reflect",
                    fill_value: float = 0.0, interpolation: str = "bilinear",
                    data_format: Optional[str] = None) -> np.ndarray:
    """Rotate each image about its centre by a random angle.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), or (N, C, H, W) with ``data_format="channels_first"``
    factor : float or (float, float)
        A fraction of a full turn (Keras's convention): ``0.1`` draws the angle from
        [-0.1, 0.1] x 2 pi (up to 36 degrees either way); a pair gives (lower, upper). A
        positive angle turns the image counter-clockwise as displayed (rows down): 0.25 is
        ``np.rot90(x, 1, (1, 2))`` on an NHWC batch.
    rng : int, numpy Generator or None
    fill_mode : {"reflect", "constant", "nearest", "wrap"}
    fill_value : float
    interpolation : {"bilinear", "nearest"}
    data_format : {None, "channels_last", "channels_first"}

    Returns
    -------
    ndarray, shaped like ``x``
    """
    x = _check_nhwc(x, "random_rotation", data_format)
    lo, hi = _range(factor, "factor")
    rng = get_rng(rng)
    n, h, w, _ = x.shape
    theta = rng.uniform(lo, hi, n) * 2 * np.pi
    cos, sin = np.cos(theta), np.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    m = np.empty((n, 2, 3))
    # output (row, col) -> input (row, col): Keras's matrix [cos, -sin; sin, cos] on
    # (col, row), written for (row, col), about the centre (cy, cx)
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = cy - cos * cy - sin * cx
    m[:, 1, 2] = cx + sin * cy - cos * cx
    return _from_nhwc(affine_transform(x, m, fill_mode, fill_value, interpolation),
                      data_format)


def _crop_size(x: np.ndarray, height, width) -> Tuple[int, int]:
    height, width = check_int(height, "height"), check_int(width, "width")
    h, w = x.shape[1:3]
    if height > h or width > w:
        raise ValueError(f"crop size {(height, width)} must fit inside the images {(h, w)}")
    return height, width


@_one_image_too
def random_crop(x, height: int, width: int, rng=None,
                data_format: Optional[str] = None) -> np.ndarray:
    """Crop a random ``height x width`` window from each image (each at its own place).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), or (N, C, H, W) with ``data_format="channels_first"``
    height, width : int
        At most the images' height and width.
    rng : int, numpy Generator or None
    data_format : {None, "channels_last", "channels_first"}

    Returns
    -------
    ndarray, shape (N, height, width, C), or (N, C, height, width)
    """
    x = _check_nhwc(x, "random_crop", data_format)
    height, width = _crop_size(x, height, width)
    n, h, w, _ = x.shape
    rng = get_rng(rng)
    top = rng.integers(0, h - height + 1, n)
    left = rng.integers(0, w - width + 1, n)
    r = top[:, None] + np.arange(height)[None, :]
    cidx = left[:, None] + np.arange(width)[None, :]
    return _from_nhwc(x[np.arange(n)[:, None, None], r[:, :, None], cidx[:, None, :]],
                      data_format)


@_one_image_too
def center_crop(x, height: int, width: int, data_format: Optional[str] = None) -> np.ndarray:
    """Crop the central ``height x width`` window of each image.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), or (N, C, H, W) with ``data_format="channels_first"``
    height, width : int
        At most the images' height and width; an odd margin leaves its extra row (column)
        at the bottom (right).
    data_format : {None, "channels_last", "channels_first"}

    Returns
    -------
    ndarray, shape (N, height, width, C), or (N, C, height, width)
    """
    given = x
    x = _check_nhwc(x, "center_crop", data_format)
    height, width = _crop_size(x, height, width)
    h, w = x.shape[1:3]
    t, l = (h - height) // 2, (w - width) // 2
    y = _from_nhwc(x[:, t:t + height, l:l + width], data_format)
    # a copy also when the window is already contiguous (_from_nhwc then returns the view
    # itself, which let the caller's data change), and only then (one copy, not two)
    return y.copy() if np.may_share_memory(y, given) else y


class _Augmentation(Layer):
    """Base of the augmentation layers: random in training, identity at inference.

    Parameters
    ----------
    seed : int, optional
        The layer's own generator; None draws from fastnn's global one.
    data_format : {None, "channels_last", "channels_first"}
        NHWC (the default, as Keras) or NCHW batches.
    **kwargs
        :class:`~fastnn.layers.Layer`'s (name, input_shape, dtype, trainable).
    """

    def __init__(self, seed: Optional[int] = None, data_format: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self._rng = None if seed is None else get_rng(seed)
        self.seed = seed if seed is None or self._rng is seed else int(seed)  # (JSON)
        self.data_format = _data_format(data_format)

    def _generator(self):
        return self._rng if self._rng is not None else get_rng()

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """``x`` a batch, or one image ((H, W, C) or (C, H, W)) as Keras's layers take:
        transformed as a batch of one, returned without the batch axis."""
        x = np.asarray(x)
        if x.ndim == 3:
            return super().__call__(x[None], training=training)[0]
        return super().__call__(x, training=training)

    def backward(self, grad):
        raise RuntimeError(f"{type(self).__name__} has no gradient: put augmentation layers "
                           f"before every trainable layer")

    def get_config(self):
        cfg = super().get_config()
        cfg["seed"] = self.seed
        cfg["data_format"] = self.data_format
        return cfg


class RandomFlip(_Augmentation):
    """Randomly flip images in training (:func:`random_flip`), as Keras's RandomFlip.

    Parameters
    ----------
    mode : {"horizontal_and_vertical", "horizontal", "vertical"}
        "horizontal_and_vertical" (the default) turns a chosen image half a turn, as
        Keras 3 does.
    seed, data_format, **kwargs
        As every augmentation layer (see ``_Augmentation``).
    """

    def __init__(self, mode: str = "horizontal_and_vertical", seed=None, data_format=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        _check_flip_mode(mode)   # (not by a call: it would draw from the global generator)
        self.mode = mode

    def forward(self, x, training=False):
        """x: (N, H, W, C) or (N, C, H, W); returns it flipped in training, as is else."""
        if not training:
            return x
        return random_flip(x, self.mode, self._generator(), self.data_format)

    def get_config(self):
        cfg = super().get_config()
        cfg["mode"] = self.mode
        return cfg


class RandomTranslation(_Augmentation):
    """Randomly shift images in training (:func:`random_shift`), as Keras's
    RandomTranslation.

    Parameters
    ----------
    height_factor, width_factor : float or (float, float)
        Fractions of the height and width (see :func:`random_shift`).
    fill_mode, interpolation, fill_value
        As :func:`random_shift`.
    seed, data_format, **kwargs
        As every augmentation layer (see ``_Augmentation``).
    """

    def __init__(self, height_factor: Factor, width_factor: Factor, fill_mode="reflect",
                 interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        _range(height_factor, "height_factor", 1.0)
        _range(width_factor, "width_factor", 1.0)
        _check_fill(fill_mode, interpolation, fill_value)
        self.height_factor, self.width_factor = _plain(height_factor), _plain(width_factor)
        self.fill_mode, self.interpolation = fill_mode, interpolation
        self.fill_value = float(fill_value)

    def forward(self, x, training=False):
        if not training:
            return x
        return random_shift(x, self.height_factor, self.width_factor, self._generator(),
                            self.fill_mode, self.fill_value, self.interpolation,
                            self.data_format)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(height_factor=self.height_factor, width_factor=self.width_factor,
                   fill_mode=self.fill_mode, interpolation=self.interpolation,
                   fill_value=self.fill_value)
        return cfg


class RandomRotation(_Augmentation):
    """Randomly rotate images in training by up to ``factor * 2 pi`` radians
    (:func:`random_rotation`), as Keras's RandomRotation.

    Parameters
    ----------
    factor : float or (float, float)
        A fraction of a full turn (see :func:`random_rotation`).
    fill_mode, interpolation, fill_value
        As :func:`random_rotation`.
    seed, data_format, **kwargs
        As every augmentation layer (see ``_Augmentation``).
    """

    def __init__(self, factor: Factor, fill_mode="reflect", interpolation="bilinear",
                 seed=None, fill_value=0.0, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        _range(factor, "factor")
        _check_fill(fill_mode, interpolation, fill_value)
        self.factor = _plain(factor)
        self.fill_mode, self.interpolation = fill_mode, interpolation
        self.fill_value = float(fill_value)

    def forward(self, x, training=False):
        if not training:
            return x
        return random_rotation(x, self.factor, self._generator(), self.fill_mode,
                               self.fill_value, self.interpolation, self.data_format)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(factor=self.factor, fill_mode=self.fill_mode,
                   interpolation=self.interpolation, fill_value=self.fill_value)
        return cfg


class RandomCrop(_Augmentation):
    """Crop a random ``height x width`` window in training and the central one at
    inference, so the output shape is the same in both.

    Three differences from Keras's RandomCrop, which resizes: at inference Keras scales the
    largest central window of the target's aspect ratio down to ``height x width`` (the
    whole image, for a square one) where this layer takes the central crop; in training
    Keras crops every image of a batch at one location, this layer each at its own; and
    images smaller than the target are an error here (Keras scales them up).

    Parameters
    ----------
    height, width : int
        The output's image size.
    seed, data_format, **kwargs
        As every augmentation layer (see ``_Augmentation``).
    """

    def __init__(self, height: int, width: int, seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.height, self.width = check_int(height, "height"), check_int(width, "width")

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_first":
            return (input_shape[0], input_shape[1], self.height, self.width)
        return (input_shape[0], self.height, self.width, input_shape[3])

    def forward(self, x, training=False):
        """x: (N, H, W, C) or (N, C, H, W); returns (N, height, width, C) or
        (N, C, height, width): a random crop in training, the central one else."""
        if training:
            return random_crop(x, self.height, self.width, self._generator(),
                               self.data_format)
        return center_crop(x, self.height, self.width, self.data_format)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(height=self.height, width=self.width)
        return cfg


AUGMENTATION_LAYERS = (RandomFlip, RandomTranslation, RandomRotation, RandomCrop)
