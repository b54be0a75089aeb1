"""Kernel backends behind :mod:`fastnn.ops`.

Every backend module (``c_backend``, ``numba_backend``, ``numpy_backend``) implements the
same primitive functions. The public wrappers in :mod:`fastnn.ops` have already validated
every argument when a primitive is called, so primitives do no checking:

* every array is C-contiguous, float32 or float64 (one dtype per call; ``argmax`` is int64);
* ``g`` is a :class:`fastnn.ops._geometry.ConvGeometry` describing the input;
* ``layout`` is ``"NHWC"`` or ``"NCHW"``;
* output arrays are passed in, already allocated with the right shape and dtype, and the
  primitive writes them (overwrite, never accumulate, unless stated);
* the batch size ``g.n`` is >= 1.

Primitives
----------
``gemm(trans_a, trans_b, alpha, a, b, beta, c)``
    ``c[:] = alpha * op(a) @ op(b) + beta * c`` with ``op(a)`` of shape (M, K), ``op(b)`` of
    shape (K, N), ``c`` of shape (M, N). ``beta == 0`` overwrites ``c`` without reading it
    (NaN in the old ``c`` does not propagate), as in BLAS. K may be 0. Unlike BLAS,
    ``alpha == 0`` is not special: NaN in ``a`` or ``b`` propagates. ``c`` never overlaps
    ``a`` or ``b`` (the wrapper copies such inputs).
``gemm_fast(trans_a, trans_b, alpha, a, b, out)`` (the C backend; None in the others)
    The one primitive called with unchecked arrays: ``alpha * op(a) @ op(b)`` into ``out``
    or a new array, or None, computing nothing, when the call is not a plain one (see
    ``c_backend.gemm_fast``); ``ops.matmul`` tries it before its own checks.
``im2col(x, g, layout, cols)``
    ``cols`` (g.n*g.oh*g.ow, g.kh*g.kw*g.c); rows over (n, oh, ow); columns over
    (kh, kw, c) for NHWC and (c, kh, kw) for NCHW. Padded positions are 0.
``col2im(cols, g, layout, x)``
    The exact adjoint of im2col: ``x`` (overwritten) is the sum of every column entry into
    the input element it was read from; padded positions are dropped.
``bias_act(y, b, act, out)``
    ``y`` and ``out`` (outer, C, inner); ``b`` (C,) or None; ``act`` "identity" or "relu";
    ``out = act(y + b[None, :, None])``; relu is ``v < 0 ? 0 : v``, so NaN propagates;
    without a bias ``y`` passes unchanged (-0.0 stays -0.0). ``out`` may be ``y``.
``bias_act_backward(dy, y, act, dx, db)``
    ``y`` is the *output* of bias_act; ``dx = dy * act'(y)`` (relu: ``y > 0``);
    ``db`` (C,) or None is overwritten with ``dx.sum(axis=(0, 2))``. ``dx`` may be ``dy``.
``batchnorm_stats(x, mean, var)``
    ``x`` (outer, C, inner) with ``outer * inner >= 1``: ``mean`` (C,) and ``var`` (C,) are
    overwritten with each channel's mean and biased variance over axes 0 and 2 (computed
    in float64, rounded to x's dtype; NaN in a channel makes both NaN).
``batchnorm_forward(x, mean, inv_std, gamma, beta, out)``
    ``out = (x - mean) * (inv_std * gamma) + beta`` per channel (mean, inv_std, gamma,
    beta (C,), broadcast along axis 1), each operation in x's dtype, in that order;
    ``gamma`` None: ``inv_std`` alone; ``beta`` None: no add. ``out`` may be ``x``.
``batchnorm_backward(dy, x, mean, inv_std, gamma, training, dx, dgamma, dbeta)``
    With the channel sums (float64) ``s1 = sum(dy)``, ``s2 = sum(dy * (x - mean))``
    (``x - mean`` in x's dtype) and ``a = gamma * inv_std`` (gamma None: 1): ``dbeta =
    s1``, ``dgamma = s2 * inv_std`` where not None; training (the batch's statistics):
    ``dx = a * (dy - s1 / n) - k * (x - mean)``, ``k = gamma * inv_std**3 * s2 / n``
    (``n = outer * inner``; the coefficients from float64, rounded to the dtype, then each
    operation in the dtype); else ``dx = a * dy``. ``dx`` may be ``dy``.
``relu_mask(x, y, mask)``
    Any shape; ``mask`` a bool array of x's shape. ``mask = x <= 0`` and ``y = mask ? +0.0 :
    x`` (NaN passes, -0.0 becomes +0.0), both overwritten; ``y`` may be ``x``.
``relu_mask_backward(dy, mask, dx)``
    ``dx = mask ? +0.0 : dy``, overwritten; ``dx`` may be ``dy``.
``conv2d_forward(x, w, b, g, layout, act, y, chunk)``
    NHWC: x (N, H, W, C), w (KH, KW, C, F), y (N, OH, OW, F);
    NCHW: x (N, C, H, W), w (F, C, KH, KW), y (N, F, OH, OW); b (F,) or None;
    ``y = act(conv(x, w) + b)``. At most ``chunk`` images are lowered to columns at once.
``conv2d_backward(dy, x, w, g, layout, dx, dw, db, chunk)``
    Gradients of ``conv(x, w) + b`` given ``dy``; ``dx`` and ``db`` may be None (not
    wanted). dw and db (F,) are overwritten.
``maxpool2d_forward(x, g, layout, y, argmax)``
    ``y`` and ``argmax`` have the output shape (channels = g.c). ``argmax`` holds, for each
    output, the flat index of the chosen element *within its sample*, i.e. into
    ``x[n].ravel()`` (H*W*C order for NHWC, C*H*W order for NCHW). Padded positions never
    win. Ties go to the first element in row-major window order; NaN counts as larger
    than any number (the first NaN wins), so NaN propagates.
``maxpool2d_backward(dy, argmax, g, layout, dx)``
    ``dx`` (overwritten) is zero except ``dx[n].flat[argmax[n, ...]] += dy[n, ...]``.
    The one primitive that may get an ``argmax`` outside ``[0, g.h * g.w * g.c)``, where
    the backend sets ``ARGMAX_RANGE_CHECKED = True`` (the C backend): it then skips such
    an index (never uses it as an address) and returns False, else True; the wrapper
    raises. Elsewhere the wrapper checks the range first.
``avgpool2d_forward(x, g, layout, y)``
    Mean over the in-bounds elements of each window (padding is not counted: Keras).
``avgpool2d_backward(dy, g, layout, dx)``
    Adjoint of avgpool2d_forward; ``dx`` overwritten.
``adam_update(p, g, m, v, vhat, alpha, omb1, omb2, eps, flush)``
    Keras's Adam step in place on 1-D arrays of one dtype (``vhat`` None unless AMSGrad),
    every operation in the arrays' dtype, in this order::

        m += (g - m) * omb1;  v += (g * g - v) * omb2
        if flush: m, v (and vhat below) of magnitude below the smallest normal number
                  = +0 (C: and the step in flush-to-zero mode, see ops.adam_update)
        vhat = maximum(vhat, v) (NaN propagates) and use it as v below, if given
        p -= (m * alpha) / (sqrt(v) + eps)

    The scalars are Python floats, rounded to the dtype first. Bitwise equal across
    backends (no FMA contraction).

``softmax_xent(z, labels, t, scale, probs, loss, dz)``
    Softmax cross-entropy of the rows of ``z`` (N, K), K >= 1, against ``labels`` (N,)
    int64 in [0, K) or, when ``labels`` is None, ``t`` (N, K) of z's dtype. With
    ``s = z - max(z)`` per row (NaN in a row makes the row NaN) and
    ``total = sum(exp(s))``: ``probs = exp(s) / total``;
    labels: ``loss = log(total) - s[label]``, ``dz = (probs - onehot) * scale``;
    t: ``loss = sum(t * (log(total) - s))``, ``dz = (probs * sum(t) - t) * scale``.
    ``probs`` (N, K), ``loss`` (N,), ``dz`` (N, K) overwritten; none overlaps z or t.
    ``scale`` is a Python float, rounded to the dtype.
``dropout(seed, t, scale, x, mask, y)``
    Inverted dropout on flat arrays of one dtype: ``mask[i] = scale if word(i) >= t else
    0``, word(i) element i's 32-bit Philox4x32-10 word under the key ``seed`` (a Python int
    in [0, 2^64); ``t`` in [0, 2^32), ``scale`` a Python float rounded to the dtype): the
    generator and the element-to-word order of numpy_backend's :func:`dropout_words`,
    bit for bit; and, ``x`` not None, ``y = x * mask``. None overlaps; ``y`` is None
    when ``x`` is.

Optional primitives (a backend without them gets the calls they stand for):

``activation(x, kind, alpha, out)``, ``activation_backward(dy, x, y, kind, alpha, dx)``
    Flat arrays of one dtype: ``out = f(x)`` and ``dx = dy * f'(x)`` for ``kind``
    "sigmoid", "silu", "elu", "selu" or "leaky_relu" (``alpha``: elu's alpha, leaky_relu's
    negative_slope), by the formulas of numpy_backend's functions of these names (the
    reference; a backend without them gets those). The C backend has them, on its own
    vectorised exp (csrc/activation_body.h); ``out`` may be ``x``, ``dx`` may be ``dy``.

``conv2d_maxpool_forward(x, w, b, g, layout, act, y, argmax, chunk) -> bool``
    ``y``, ``argmax`` = ``maxpool2d_forward`` with 2x2 windows, stride 2, no padding, of
    ``act(conv(x, w) + b)``, bit for bit, without writing the convolution's output; returns
    False (nothing written) where it does not apply. The C backend has it (NHWC, AVX2),
    Numba too (NHWC with small patches, its direct convolution).
``conv2d_maxpool_backward(dy, argmax, x, w, g, layout, dx, dw, db, chunk) -> bool``
    ``dx``, ``dw``, ``db`` (``dx``, ``db`` None: not wanted) = those of ``conv2d_backward``
    given ``maxpool2d_backward(dy, argmax)`` (2x2 windows, stride 2, of the convolution's
    output of geometry ``g``), up to rounding, without forming that gradient: each pooled
    gradient's products with its argmax pixel only, a quarter of the dense backward's;
    returns False (nothing written) where it does not apply. The C backend has it (NHWC).

``batchnorm_maxpool_forward(x, mean, inv_std, gamma, beta, y, pos, x_max)``
    x (N, H, W, C): ``y`` (N, H // 2, W // 2, C) = ``maxpool2d_forward`` with 2x2 windows,
    stride 2, no padding, of ``batchnorm_forward(x, ...)``, bit for bit, ``pos`` (uint8,
    y's shape) each maximum's window position (0 .. 3) and ``x_max`` (y's shape) x there,
    without writing the normalized array. The C backend has it.
``batchnorm_maxpool_backward(dy, pos, x_max, x, mean, inv_std, gamma, training, dx, dgamma,
dbeta) -> bool``
    ``batchnorm_backward`` given the gradient that ``maxpool2d_backward`` scatters from
    ``dy`` (y's shape) by the window positions ``pos``, up to the sums' rounding, without
    forming it (the sums over ``dy`` and ``x_max`` alone); returns False where a position
    is above 3 (its gradient dropped, never an address). The C backend has it.

A backend with ``CONV_POOL_POSITIONS = True`` (the C backend) takes ``argmax`` in these two
as uint8 window positions too (each pooled element's pixel in its window: 0, 1, 2, 3 for
(0, 0), (0, 1), (1, 0), (1, 1); ``ops.conv2d_maxpool_forward``'s ``argmax_format="window"``),
and its fused kernels drop the gradient of a position above 3 in the backward; for the
other backends, and where the fused kernels do not apply, the wrappers convert to and from
flat indices (refusing, with a ValueError, a position above 3).

Module-level functions: ``set_num_threads(n)``, ``get_num_threads() -> int``,
``isa() -> str`` (e.g. "avx512", "avx2", "generic", "numpy").
"""
