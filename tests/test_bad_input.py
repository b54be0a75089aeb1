"""Bad input raises ValueError or TypeError naming the argument, on every backend.

Validation happens in fastnn.ops before any backend runs (one exception: argmax's range in
maxpool2d_backward, which the C backend checks as it scatters, never using such an index);
running every case under every backend proves that no backend ever crashes on bad input,
and that the backend still works afterwards.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _backend, ops
from conftest import assert_close, reference

F32, F64 = np.float32, np.float64
# (np.matrix cases: NumPy warns that the class is not recommended)
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def x4(dtype=F32, shape=(2, 6, 6, 3)):
    return np.ones(shape, dtype)


def w4(dtype=F32, shape=(3, 3, 3, 4)):
    return np.ones(shape, dtype)


def _ro(a):
    a.flags.writeable = False
    return a


def _y_shape(x, w, **kw):
    with fastnn.use_backend("numpy"):
        return ops.conv2d_forward(x, w, **kw).shape


def _pool_dy(**kw):
    with fastnn.use_backend("numpy"):
        return ops.maxpool2d_forward(x4(), 2, **kw)


BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64,
              np.complex128, object]
DT_IDS = [np.dtype(d).name for d in BAD_DTYPES]

# (id, exception, regex naming the argument, callable)
CASES = [
    # ---------------------------------------------------------------- wrong ndim
    ("conv_x_3d", ValueError, r"\bx must be 4-D", lambda: ops.conv2d_forward(np.ones((6, 6, 3), F32), w4())),
    ("conv_x_5d", ValueError, r"\bx must be 4-D", lambda: ops.conv2d_forward(np.ones((1, 2, 6, 6, 3), F32), w4())),
    ("conv_w_2d", ValueError, r"\bw must be 4-D", lambda: ops.conv2d_forward(x4(), np.ones((9, 4), F32))),
    ("conv_b_2d", ValueError, r"\bb must be 1-D", lambda: ops.conv2d_forward(x4(), w4(), np.ones((4, 1), F32))),
    ("conv_bwd_dy_3d", ValueError, r"\bdy must be 4-D", lambda: ops.conv2d_backward(np.ones((4, 4, 4), F32), x4(), w4())),
    ("im2col_x_2d", ValueError, r"\bx must be 4-D", lambda: ops.im2col(np.ones((6, 6), F32), 3)),
    ("col2im_cols_3d", ValueError, r"\bcols must be 2-D", lambda: ops.col2im(np.ones((2, 16, 27), F32), (2, 6, 6, 3), 3)),
    ("maxpool_x_3d", ValueError, r"\bx must be 4-D", lambda: ops.maxpool2d_forward(np.ones((6, 6, 3), F32), 2)),
    ("avgpool_x_1d", ValueError, r"\bx must be 4-D", lambda: ops.avgpool2d_forward(np.ones(6, F32), 2)),
    ("maxpool_bwd_dy_3d", ValueError, r"\bdy must be 4-D", lambda: ops.maxpool2d_backward(np.ones((3, 3, 3), F32), np.zeros((3, 3, 3), np.int64), (2, 6, 6, 3), 2)),
    ("avgpool_bwd_dy_2d", ValueError, r"\bdy must be 4-D", lambda: ops.avgpool2d_backward(np.ones((3, 3), F32), (2, 6, 6, 3), 2)),
    ("matmul_a_1d", ValueError, r"\ba must be 2-D", lambda: ops.matmul(np.ones(3, F32), np.ones((3, 2), F32))),
    ("matmul_b_3d", ValueError, r"\bb must be 2-D", lambda: ops.matmul(np.ones((2, 3), F32), np.ones((3, 2, 1), F32))),
    ("bias_act_x_0d", ValueError, r"\bx must have at least 1 dimension", lambda: ops.bias_act(np.float32(1.0).reshape(()), None)),
    ("bias_act_b_2d", ValueError, r"\bb must be 1-D", lambda: ops.bias_act(np.ones((2, 3), F32), np.ones((1, 3), F32))),
    # ---------------------------------------------------------------- shapes
    ("conv_channel_mismatch_nhwc", ValueError, r"\bw has 5 input channels.*\bx has 3 channels", lambda: ops.conv2d_forward(x4(), w4(shape=(3, 3, 5, 4)))),
    ("conv_channel_mismatch_nchw", ValueError, r"\bw has 2 input channels.*\bx has 3 channels", lambda: ops.conv2d_forward(np.ones((1, 3, 6, 6), F32), np.ones((4, 2, 3, 3), F32), layout="NCHW")),
    ("conv_bwd_channel_mismatch", ValueError, r"\bw has 5 input channels", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(shape=(3, 3, 5, 4)))),
    ("conv_w_zero_dim", ValueError, r"\bw must have every dimension >= 1", lambda: ops.conv2d_forward(x4(), w4(shape=(3, 3, 3, 0)))),
    ("conv_x_zero_h", ValueError, r"\bx must have height, width and channels >= 1", lambda: ops.conv2d_forward(x4(shape=(2, 0, 6, 3)), w4())),
    ("conv_b_wrong_len", ValueError, r"\bb must have shape \(4,\)", lambda: ops.conv2d_forward(x4(), w4(), np.ones(3, F32))),
    ("conv_kernel_too_big", ValueError, r"kernel_size=\(7, 7\).*larger than the padded input", lambda: ops.conv2d_forward(x4(), w4(shape=(7, 7, 3, 4)))),
    ("conv_kernel_too_big_after_pad", ValueError, r"kernel_size.*larger than the padded input", lambda: ops.conv2d_forward(x4(), w4(shape=(9, 3, 3, 4)), padding=1)),
    ("conv_dilated_kernel_too_big", ValueError, r"kernel_size=\(3, 3\) \(dilation=\(3, 3\)\).*larger", lambda: ops.conv2d_forward(x4(), w4(), dilation=3)),
    ("im2col_kernel_too_big", ValueError, r"kernel_size.*larger than the padded input", lambda: ops.im2col(x4(), (2, 8))),
    ("maxpool_too_big", ValueError, r"pool_size=\(7, 7\).*larger than the padded input", lambda: ops.maxpool2d_forward(x4(), 7)),
    ("conv_pool_output_too_small", ValueError, r"the convolution's output has spatial size \(1, 4\).*smaller than the 2x2 pooling window", lambda: ops.conv2d_maxpool_forward(x4(shape=(2, 3, 6, 3)), w4())),
    ("conv_pool_b_wrong_len", ValueError, r"\bb must have shape \(4,\)", lambda: ops.conv2d_maxpool_forward(x4(), w4(), np.ones(3, F32))),
    ("conv_pool_dtype_mix", TypeError, r"\bw\b.*float64", lambda: ops.conv2d_maxpool_forward(x4(), w4(F64))),
    ("conv_pool_out_y_shape", ValueError, r"out\[0\] \(y\)", lambda: ops.conv2d_maxpool_forward(x4(), w4(), out=(np.empty((2, 3, 3, 4), F32), None))),
    ("conv_pool_out_argmax_dtype", (TypeError, ValueError), r"out\[1\] \(argmax\)", lambda: ops.conv2d_maxpool_forward(x4(), w4(), out=(None, np.empty((2, 2, 2, 4), np.int32)))),
    ("avgpool_too_big", ValueError, r"pool_size.*larger than the padded input", lambda: ops.avgpool2d_forward(x4(), (2, 9))),
    ("conv_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 4, 4, 4\)", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 5), F32), x4(), w4())),
    ("conv_bwd_crop_too_big", ValueError, r"dy has spatial size \(5, 4\).*crop=True expected 1 to \(4, 4\)", lambda: ops.conv2d_backward(np.ones((2, 5, 4, 4), F32), x4(), w4(), crop=True)),
    ("conv_bwd_crop_empty", ValueError, r"dy has spatial size \(0, 4\)", lambda: ops.conv2d_backward(np.ones((2, 0, 4, 4), F32), x4(), w4(), crop=True)),
    ("conv_bwd_crop_channels", ValueError, r"\bdy must have shape \(2, 3, 4, 4\)", lambda: ops.conv2d_backward(np.ones((2, 3, 4, 5), F32), x4(), w4(), crop=True)),
    ("conv_bwd_crop_not_bool", TypeError, r"crop must be a bool, received 'yes'", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(), crop="yes")),
    ("conv_pool_crop_not_bool", TypeError, r"crop must be a bool, received 1", lambda: ops.conv2d_maxpool_forward(x4(), w4(), crop=1)),
    ("conv_pool_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 2, 2, 4\)", lambda: ops.conv2d_maxpool_backward(np.ones((2, 3, 2, 4), F32), np.zeros((2, 3, 2, 4), np.int64), x4(), w4())),
    ("conv_pool_bwd_argmax_dtype", TypeError, r"argmax must be the int64 \(flat\) or uint8 \(window\) array returned by conv2d_maxpool_forward, received int32", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4), F32), np.zeros((2, 2, 2, 4), np.int32), x4(), w4())),
    ("conv_pool_argmax_format_type", TypeError, r"argmax_format must be a str, 'flat' or 'window', received ndarray", lambda: ops.conv2d_maxpool_forward(x4(), w4(), argmax_format=np.array(["flat", "window"]))),
    ("conv_pool_argmax_format", ValueError, r"argmax_format must be 'flat' or 'window', received 'byte'", lambda: ops.conv2d_maxpool_forward(x4(), w4(), argmax_format="byte")),
    ("conv_pool_out_window_dtype", TypeError, r"out\[1\] \(argmax\) has dtype int64 but the result is uint8", lambda: ops.conv2d_maxpool_forward(x4(), w4(), argmax_format="window", out=(None, np.zeros((2, 2, 2, 4), np.int64)))),
    ("conv_pool_bwd_window_range", ValueError, r"argmax \(uint8: window positions\) must hold values in \[0, 3\], received values in \[0, 4\]", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4), F32), np.eye(4, dtype=np.uint8).reshape(1, 2, 2, 4).repeat(2, 0) * 4, x4(), w4())),
    ("maxpool_bwd_argmax_uint8", TypeError, r"argmax must be the int64 array returned by maxpool2d_forward, received uint8", lambda: ops.maxpool2d_backward(np.ones((2, 3, 3, 3), F32), np.zeros((2, 3, 3, 3), np.uint8), (2, 6, 6, 3), 2)),
    ("conv_pool_bwd_argmax_shape", ValueError, r"\bargmax must have shape \(2, 2, 2, 4\)", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4), F32), np.zeros((2, 2, 3, 4), np.int64), x4(), w4())),
    ("conv_pool_bwd_argmax_range", ValueError, r"argmax must hold indices in \[0, 64\)", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4), F32), np.full((2, 2, 2, 4), 64, np.int64), x4(), w4(), need_dx=False)),
    ("conv_pool_bwd_argmax_negative", ValueError, r"argmax must hold indices in \[0, 64\)", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4), F32), np.full((2, 2, 2, 4), -1, np.int64), x4(), w4())),
    ("conv_pool_bwd_too_small", ValueError, r"the convolution's output has spatial size \(1, 4\)", lambda: ops.conv2d_maxpool_backward(np.ones((2, 0, 2, 4), F32), np.zeros((2, 0, 2, 4), np.int64), x4(shape=(2, 3, 6, 3)), w4())),
    ("conv_pool_bwd_dtype_mix", TypeError, r"\bdy\b.*float64", lambda: ops.conv2d_maxpool_backward(np.ones((2, 2, 2, 4)), np.zeros((2, 2, 2, 4), np.int64), x4(), w4())),
    ("conv_bwd_dy_batch", ValueError, r"\bdy must have shape", lambda: ops.conv2d_backward(np.ones((3, 4, 4, 4), F32), x4(), w4())),
    ("conv_bwd_dy_nchw", ValueError, r"\bdy must have shape \(1, 4, 4, 4\)", lambda: ops.conv2d_backward(np.ones((1, 4, 4, 5), F32), np.ones((1, 3, 6, 6), F32), np.ones((4, 3, 3, 3), F32), layout="NCHW")),
    ("maxpool_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 3, 3, 3\)", lambda: ops.maxpool2d_backward(np.ones((2, 3, 3, 2), F32), np.zeros((2, 3, 3, 2), np.int64), (2, 6, 6, 3), 2)),
    ("avgpool_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 3, 3, 3\)", lambda: ops.avgpool2d_backward(np.ones((2, 2, 3, 3), F32), (2, 6, 6, 3), 2)),
    ("bias_act_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 3\)", lambda: ops.bias_act_backward(np.ones((3, 2), F32), np.ones((2, 3), F32))),
    ("bias_act_b_wrong_len", ValueError, r"\bb must have shape \(3,\)", lambda: ops.bias_act(np.ones((2, 3), F32), np.ones(2, F32))),
    ("bias_act_b_wrong_axis", ValueError, r"\bb must have shape \(2,\)", lambda: ops.bias_act(np.ones((2, 3), F32), np.ones(3, F32), channel_axis=0)),
    ("act_kind", ValueError, r"kind must be one of \('sigmoid', 'silu', 'elu', 'selu', 'leaky_relu', 'gelu', 'relu6', 'hard_sigmoid', 'hard_silu', 'celu', 'tanh'\), received 'mish'", lambda: ops.activation(np.ones(3, F32), "mish")),
    ("act_celu_alpha_0", ValueError, r"alpha must be non-zero for celu .*received alpha=0.0", lambda: ops.activation(np.ones(3, F32), "celu", alpha=0)),
    ("act_alpha_type", TypeError, r"alpha must be a real number, received '0.2'", lambda: ops.activation(np.ones(3, F32), "elu", alpha="0.2")),
    ("act_bwd_x_shape", ValueError, r"\bx must have shape \(3,\) \(the shape of dy\)", lambda: ops.activation_backward(np.ones(3, F32), np.ones(4, F32), np.ones(3, F32), "sigmoid")),
    ("act_bwd_y_dtype", TypeError, r"\by has dtype float64 but dy has dtype float32", lambda: ops.activation_backward(np.ones(3, F32), np.ones(3, F32), np.ones(3), "sigmoid")),
    ("drop_rate_1", ValueError, r"rate must be in \[0, 1\), received rate=1", lambda: ops.dropout(np.ones(3, F32), 1, 5)),
    ("drop_rate_neg", ValueError, r"rate must be in \[0, 1\), received rate=-0.1", lambda: ops.dropout_mask((3,), -0.1, 5)),
    ("drop_rate_type", TypeError, r"rate must be a real number in \[0, 1\), received rate='0.5'", lambda: ops.dropout(np.ones(3, F32), "0.5", 5)),
    ("drop_rate_nan", ValueError, r"rate must be in \[0, 1\), received rate=nan", lambda: ops.dropout(np.ones(3, F32), float("nan"), 5)),
    ("drop_seed_neg", ValueError, r"seed must be in \[0, 2\*\*64\), received seed=-1", lambda: ops.dropout(np.ones(3, F32), 0.5, -1)),
    ("drop_seed_big", ValueError, r"seed must be in \[0, 2\*\*64\), received seed=18446744073709551616", lambda: ops.dropout_mask((3,), 0.5, 2**64)),
    ("drop_seed_float", TypeError, r"seed must be an int in \[0, 2\*\*64\), received seed=1.0", lambda: ops.dropout(np.ones(3, F32), 0.5, 1.0)),
    ("drop_x_int", TypeError, r"\bx\b", lambda: ops.dropout(np.ones(3, np.int32), 0.5, 1)),
    ("drop_shape", ValueError, r"shape must be a tuple of non-negative ints, received \(3, -1\)", lambda: ops.dropout_mask((3, -1), 0.5, 1)),
    ("drop_dtype", TypeError, r"dtype must be float32 or float64, received int64", lambda: ops.dropout_mask((3,), 0.5, 1, np.int64)),
    ("drop_out_shape", ValueError, r"out must be an array of shape \(3,\)", lambda: ops.dropout(np.ones(3, F32), 0.5, 1, out=np.ones(4, F32))),
    ("drop_mask_out_is_x", ValueError, r"mask_out must not overlap an input", lambda: (lambda a: ops.dropout(a, 0.5, 1, mask_out=a))(np.ones(3, F32))),
    ("drop_out_is_mask", ValueError, r"\bout must not overlap an input", lambda: (lambda a: ops.dropout(np.ones(3, F32), 0.5, 1, out=a, mask_out=a))(np.ones(3, F32))),
    ("act_out_overlaps_x", ValueError, r"\bout overlaps x only partly", lambda: (lambda b: ops.activation(b[:4], "sigmoid", out=b[1:]))(np.ones(5, F32))),
    ("bn_stats_x_0d", ValueError, r"\bx must have at least 1 dimension", lambda: ops.batchnorm_stats(np.float32(1.0).reshape(()))),
    ("bn_stats_axis", ValueError, r"channel_axis must be an int in \[-2, 2\), received 2", lambda: ops.batchnorm_stats(np.ones((2, 3), F32), channel_axis=2)),
    ("bn_fwd_mean_len", ValueError, r"\bmean must have shape \(3,\) \(x.shape\[-1\]\), received \(2,\)", lambda: ops.batchnorm_forward(np.ones((2, 3), F32), np.ones(2, F32), np.ones(3, F32))),
    ("bn_fwd_inv_std_2d", ValueError, r"\binv_std must be 1-D", lambda: ops.batchnorm_forward(np.ones((2, 3), F32), np.ones(3, F32), np.ones((1, 3), F32))),
    ("bn_fwd_gamma_dtype", TypeError, r"\bgamma has dtype float64 but x has dtype float32", lambda: ops.batchnorm_forward(np.ones((2, 3), F32), np.ones(3, F32), np.ones(3, F32), np.ones(3))),
    ("bn_fwd_beta_axis", ValueError, r"\bbeta must have shape \(2,\) \(x.shape\[0\]\)", lambda: ops.batchnorm_forward(np.ones((2, 3), F32), np.ones(2, F32), np.ones(2, F32), None, np.ones(3, F32), channel_axis=0)),
    ("bn_fwd_out_overlaps_mean", ValueError, r"\bout must not overlap an input", lambda: (lambda buf: ops.batchnorm_forward(np.ones((1, 3), F32), buf[0], np.ones(3, F32), out=buf))(np.ones((1, 3), F32))),
    ("bn_bwd_dy_shape", ValueError, r"\bdy must have shape \(2, 3\)", lambda: ops.batchnorm_backward(np.ones((3, 2), F32), np.ones((2, 3), F32), np.ones(3, F32), np.ones(3, F32))),
    ("bn_bwd_training_type", TypeError, r"\btraining must be a bool, received 1", lambda: ops.batchnorm_backward(np.ones((2, 3), F32), np.ones((2, 3), F32), np.ones(3, F32), np.ones(3, F32), training=1)),
    ("bn_bwd_dy_dtype", TypeError, r"\bdy has dtype float64 but x has dtype float32", lambda: ops.batchnorm_backward(np.ones((2, 3)), np.ones((2, 3), F32), np.ones(3, F32), np.ones(3, F32))),
    ("bn_bwd_out_is_x", ValueError, r"\bout must not overlap an input", lambda: (lambda x: ops.batchnorm_backward(np.ones((2, 3), F32), x, np.ones(3, F32), np.ones(3, F32), out=x))(np.ones((2, 3), F32))),
    ("col2im_cols_shape", ValueError, r"\bcols must have shape \(32, 27\)", lambda: ops.col2im(np.ones((32, 26), F32), (2, 6, 6, 3), 3)),
    ("col2im_x_shape_len", ValueError, r"\bx_shape must be a tuple of 4", lambda: ops.col2im(np.ones((32, 27), F32), (6, 6, 3), 3)),
    ("col2im_x_shape_neg", ValueError, r"\bx_shape must be a tuple of 4 non-negative", lambda: ops.col2im(np.ones((32, 27), F32), (-2, 6, 6, 3), 3)),
    ("col2im_x_shape_type", TypeError, r"\bx_shape must be a tuple of 4 ints", lambda: ops.col2im(np.ones((32, 27), F32), "abcd", 3)),
    ("avgpool_bwd_x_shape_type", TypeError, r"\bx_shape", lambda: ops.avgpool2d_backward(np.ones((2, 3, 3, 3), F32), None, 2)),
    ("maxpool_bwd_x_shape_zero_c", ValueError, r"\bx_shape must have height, width and channels", lambda: ops.maxpool2d_backward(np.ones((2, 3, 3, 0), F32), np.zeros((2, 3, 3, 0), np.int64), (2, 6, 6, 0), 2)),
    ("col2im_x_shape_float", TypeError, r"\bx_shape must be a tuple of 4 ints, received \(2, 6, 6, 2.7\)", lambda: ops.col2im(np.ones((32, 27), F32), (2, 6, 6, 2.7), 3)),
    ("maxpool_bwd_x_shape_str", TypeError, r"\bx_shape must be a tuple of 4 ints", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1], (2, 6, 6, "3"), 2)),
    ("matmul_inner", ValueError, r"inner dimensions differ: op\(a\).*op\(b\)", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((5, 2), F32))),
    ("matmul_inner_trans_a", ValueError, r"inner dimensions differ.*trans_a=True", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), trans_a=True)),
    ("matmul_inner_trans_b", ValueError, r"inner dimensions differ.*trans_b=True", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), trans_b=True)),
    # ---------------------------------------------------------------- hyper-parameters
    ("conv_stride_0", ValueError, r"\bstride must be >= 1", lambda: ops.conv2d_forward(x4(), w4(), stride=0)),
    ("conv_stride_neg_pair", ValueError, r"\bstride must be >= 1", lambda: ops.conv2d_forward(x4(), w4(), stride=(1, -2))),
    ("conv_stride_float", TypeError, r"\bstride must be an int or a pair", lambda: ops.conv2d_forward(x4(), w4(), stride=1.5)),
    ("conv_stride_bool", TypeError, r"\bstride must be an int or a pair", lambda: ops.conv2d_forward(x4(), w4(), stride=True)),
    ("conv_stride_triple", TypeError, r"\bstride must be an int or a pair", lambda: ops.conv2d_forward(x4(), w4(), stride=(1, 1, 1))),
    ("conv_bwd_stride_0", ValueError, r"\bstride must be >= 1", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(), stride=0)),
    ("conv_dilation_0", ValueError, r"\bdilation must be >= 1", lambda: ops.conv2d_forward(x4(), w4(), dilation=0)),
    ("conv_dilation_neg", ValueError, r"\bdilation must be >= 1", lambda: ops.conv2d_forward(x4(), w4(), dilation=(-1, 1))),
    ("im2col_dilation_0", ValueError, r"\bdilation must be >= 1", lambda: ops.im2col(x4(), 3, dilation=(1, 0))),
    ("im2col_kernel_0", ValueError, r"\bkernel_size must be >= 1", lambda: ops.im2col(x4(), 0)),
    ("im2col_kernel_str", TypeError, r"\bkernel_size must be an int or a pair", lambda: ops.im2col(x4(), "3")),
    ("maxpool_pool_0", ValueError, r"\bpool_size must be >= 1", lambda: ops.maxpool2d_forward(x4(), 0)),
    ("maxpool_pool_neg", ValueError, r"\bpool_size must be >= 1", lambda: ops.maxpool2d_forward(x4(), (2, -1))),
    ("avgpool_pool_0", ValueError, r"\bpool_size must be >= 1", lambda: ops.avgpool2d_forward(x4(), (0, 2))),
    ("avgpool_pool_float", TypeError, r"\bpool_size must be an int or a pair", lambda: ops.avgpool2d_forward(x4(), 2.0)),
    ("maxpool_stride_0", ValueError, r"\bstride must be >= 1", lambda: ops.maxpool2d_forward(x4(), 2, stride=0)),
    ("avgpool_bwd_pool_0", ValueError, r"\bpool_size must be >= 1", lambda: ops.avgpool2d_backward(np.ones((2, 3, 3, 3), F32), (2, 6, 6, 3), 0)),
    ("maxpool_pad_ge_pool", ValueError, r"\bpadding must be smaller than pool_size", lambda: ops.maxpool2d_forward(x4(), 2, padding=2)),
    ("avgpool_pad_ge_pool", ValueError, r"\bpadding must be smaller than pool_size", lambda: ops.avgpool2d_forward(x4(), 3, padding=((0, 3), (0, 0)))),
    # geometry so large that sizes computed from it would wrap int64 (a segfault in C before)
    ("conv_dilation_2_32", ValueError, r"\bdilation must be <= 2147483647", lambda: ops.conv2d_forward(np.ones((1, 1, 1, 1), F32), np.ones((2, 2, 1, 1), F32), padding="same", dilation=2**32 - 1)),
    ("conv_same_dilation_huge", ValueError, r"padded input of \d+ elements; expected fewer than 2\*\*62: check the input.s shape, padding", lambda: ops.conv2d_forward(np.ones((1, 1, 1, 1), F32), np.ones((2, 2, 1, 1), F32), padding="same", dilation=2**31 - 1)),
    ("conv_stride_2_31", ValueError, r"\bstride must be <= 2147483647", lambda: ops.conv2d_forward(np.ones((1, 2, 2, 1), F32), np.ones((2, 2, 1, 1), F32), padding=2**31 - 1, stride=2**31)),
    ("conv_pad_huge_product", ValueError, r"padded input of \d+ elements", lambda: ops.conv2d_forward(np.ones((1, 2, 2, 1), F32), np.ones((2, 2, 1, 1), F32), padding=2**31 - 1, stride=2**31 - 1)),
    ("conv_pad_2_31", ValueError, r"\bpadding must be <= 2147483647 \(2\*\*31 - 1\) on every side", lambda: ops.conv2d_forward(x4(), w4(), padding=((0, 2**31), (0, 0)))),
    ("conv_bwd_dilation_huge", ValueError, r"\bdilation must be <=", lambda: ops.conv2d_backward(np.ones((1, 1, 1, 1), F32), np.ones((1, 1, 1, 1), F32), np.ones((2, 2, 1, 1), F32), padding="same", dilation=2**32 - 1)),
    ("conv_pool_dilation_huge", ValueError, r"padded input of \d+ elements", lambda: ops.conv2d_maxpool_forward(np.ones((1, 2, 2, 1), F32), np.ones((2, 2, 1, 1), F32), padding="same", dilation=2**31 - 1)),
    ("maxpool_pool_2_63", ValueError, r"\bpool_size must be <= 2147483647", lambda: ops.maxpool2d_forward(np.ones((1, 2, 2, 1)), 2**63, padding=2**63 - 1)),
    ("avgpool_pad_2_63", ValueError, r"\bpadding must be <= 2147483647", lambda: ops.avgpool2d_forward(np.ones((1, 2, 2, 1)), 2, padding=2**63)),
    ("conv_pad_neg", ValueError, r"\bpadding must be >= 0", lambda: ops.conv2d_forward(x4(), w4(), padding=-1)),
    ("conv_pad_neg_pairs", ValueError, r"\bpadding must be >= 0", lambda: ops.conv2d_forward(x4(), w4(), padding=((1, -1), (0, 0)))),
    ("conv_pad_bad_string", ValueError, r"\bpadding must be 'valid', 'same'", lambda: ops.conv2d_forward(x4(), w4(), padding="full")),
    ("conv_pad_empty_string", ValueError, r"\bpadding must be", lambda: ops.conv2d_forward(x4(), w4(), padding="")),
    ("maxpool_pad_bad_string", ValueError, r"\bpadding must be", lambda: ops.maxpool2d_forward(x4(), 2, padding="causal")),
    ("im2col_pad_float", TypeError, r"\bpadding must be", lambda: ops.im2col(x4(), 3, padding=1.0)),
    ("im2col_pad_triple", TypeError, r"\bpadding must be", lambda: ops.im2col(x4(), 3, padding=(1, 1, 1))),
    ("im2col_pad_bool", TypeError, r"\bpadding must be", lambda: ops.im2col(x4(), 3, padding=True)),
    ("conv_pad_none", TypeError, r"\bpadding must be", lambda: ops.conv2d_forward(x4(), w4(), padding=None)),
    ("conv_layout_bad", ValueError, r"\blayout must be 'NHWC' or 'NCHW'", lambda: ops.conv2d_forward(x4(), w4(), layout="NHCW")),
    ("conv_layout_none", ValueError, r"\blayout must be", lambda: ops.conv2d_forward(x4(), w4(), layout=None)),
    ("im2col_layout_bad", ValueError, r"\blayout must be", lambda: ops.im2col(x4(), 3, layout="CHWN")),
    ("col2im_layout_bad", ValueError, r"\blayout must be", lambda: ops.col2im(np.ones((32, 27), F32), (2, 6, 6, 3), 3, layout="nhw")),
    ("maxpool_layout_bad", ValueError, r"\blayout must be", lambda: ops.maxpool2d_forward(x4(), 2, layout="channels_last")),
    ("avgpool_bwd_layout_bad", ValueError, r"\blayout must be", lambda: ops.avgpool2d_backward(np.ones((2, 3, 3, 3), F32), (2, 6, 6, 3), 2, layout=1)),
    ("conv_bwd_layout_bad", ValueError, r"\blayout must be", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(), layout="")),
    ("conv_activation_bad", ValueError, r"\bactivation must be one of", lambda: ops.conv2d_forward(x4(), w4(), activation="tanh")),
    ("bias_act_activation_bad", ValueError, r"\bactivation must be one of", lambda: ops.bias_act(np.ones((2, 3), F32), None, "sigmoid")),
    ("bias_act_bwd_activation_bad", TypeError, r"\bactivation must be one of", lambda: ops.bias_act_backward(np.ones((2, 3), F32), np.ones((2, 3), F32), 3)),
    ("bias_act_axis_range", ValueError, r"\bchannel_axis must be an int in \[-2, 2\)", lambda: ops.bias_act(np.ones((2, 3), F32), None, channel_axis=2)),
    ("bias_act_axis_neg_range", ValueError, r"\bchannel_axis must be", lambda: ops.bias_act(np.ones((2, 3), F32), None, channel_axis=-3)),
    ("bias_act_axis_float", ValueError, r"\bchannel_axis must be", lambda: ops.bias_act(np.ones((2, 3), F32), None, channel_axis=1.0)),
    ("bias_act_bwd_axis_range", ValueError, r"\bchannel_axis must be", lambda: ops.bias_act_backward(np.ones((2, 3), F32), np.ones((2, 3), F32), channel_axis=5)),
    ("matmul_alpha_str", TypeError, r"\balpha must be a real number", lambda: ops.matmul(np.ones((2, 2), F32), np.ones((2, 2), F32), alpha="1")),
    ("matmul_beta_none", TypeError, r"\bbeta must be a real number", lambda: ops.matmul(np.ones((2, 2), F32), np.ones((2, 2), F32), beta=None)),
    ("matmul_alpha_complex", TypeError, r"\balpha must be a real number", lambda: ops.matmul(np.ones((2, 2), F32), np.ones((2, 2), F32), alpha=1j)),
    ("workspace_limit_0", ValueError, r"\bnbytes must be a positive int", lambda: ops.set_workspace_limit(0)),
    ("workspace_limit_float", TypeError, r"\bnbytes must be a positive int", lambda: ops.set_workspace_limit(1e6)),
    ("workspace_limit_str", TypeError, r"\bnbytes must be a positive int", lambda: ops.set_workspace_limit("a")),
    # ---------------------------------------------------------------- matmul out
    ("out_shape", ValueError, r"\bout must have shape \(3, 2\)", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), out=np.zeros((2, 3), F32))),
    ("out_ndim", ValueError, r"\bout must have shape", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), out=np.zeros(6, F32))),
    ("out_dtype", TypeError, r"\bout has dtype float64", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), out=np.zeros((3, 2), F64))),
    ("out_dtype_int", TypeError, r"\bout has dtype int", lambda: ops.matmul(np.ones((3, 4), F64), np.ones((4, 2), F64), out=np.zeros((3, 2), np.int64))),
    ("out_readonly", ValueError, r"\bout must be writeable", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), out=_ro(np.zeros((3, 2), F32)))),
    ("out_readonly_beta", ValueError, r"\bout must be writeable", lambda: ops.matmul(np.ones((3, 4), F32), np.ones((4, 2), F32), beta=1.0, out=_ro(np.zeros((3, 2), F32)))),
    ("out_list", TypeError, r"\bout must be a numpy array", lambda: ops.matmul(np.ones((1, 1), F32), np.ones((1, 1), F32), out=[[0.0]])),
    # ---------------------------------------------------------------- bias_act out
    ("bias_act_out_shape", ValueError, r"\bout must be .*shape \(2, 3\)", lambda: ops.bias_act(np.ones((2, 3), F32), None, out=np.zeros((3, 2), F32))),
    # a float64 out for float32 data is a dtype mix: TypeError, as for every other argument
    ("bias_act_out_dtype", TypeError, r"\bout\b.*float", lambda: ops.bias_act(np.ones((2, 3), F32), None, out=np.zeros((2, 3), F64))),
    ("bias_act_out_int", TypeError, r"\bout\b", lambda: ops.bias_act(np.ones((2, 3), F32), None, out=np.zeros((2, 3), np.int32))),
    ("bias_act_out_readonly", ValueError, r"\bout must be .*writeable", lambda: ops.bias_act(np.ones((2, 3), F32), None, out=_ro(np.zeros((2, 3), F32)))),
    ("bias_act_out_noncontig", ValueError, r"\bout must be C-contiguous", lambda: ops.bias_act(np.ones((2, 3), F32), None, out=np.zeros((3, 2), F32).T)),
    ("bias_act_out_list", TypeError, r"\bout must be a numpy array", lambda: ops.bias_act(np.ones((1, 1), F32), None, out=[[0.0]])),
    ("bias_act_bwd_out_shape", ValueError, r"\bout must be .*shape \(2, 3\)", lambda: ops.bias_act_backward(np.ones((2, 3), F32), np.ones((2, 3), F32), out=np.zeros(6, F32))),
    ("bias_act_bwd_out_dtype", TypeError, r"\bout\b.*float", lambda: ops.bias_act_backward(np.ones((2, 3), F64), np.ones((2, 3), F64), out=np.zeros((2, 3), F32))),
    ("bias_act_bwd_out_readonly", ValueError, r"\bout must be .*writeable", lambda: ops.bias_act_backward(np.ones((2, 3), F32), np.ones((2, 3), F32), out=_ro(np.zeros((2, 3), F32)))),
    # ---------------------------------------------------------------- partly overlapping out
    # out shifted one element against its input: each backend read a different mix of old
    # and new values (bias_act summed to 1275, 4950 or 2500 depending on the backend)
    ("bias_act_out_shifted", ValueError, r"\bout overlaps x only partly", lambda: _shifted(lambda a, b: ops.bias_act(a, np.ones(10, F32), "relu", out=b))),
    ("bias_act_out_over_b", ValueError, r"\bout must not overlap an input", lambda: (lambda buf: ops.bias_act(np.ones((2, 3), F32), buf[:3], out=buf.reshape(2, 3)))(np.zeros(6, F32))),
    ("bias_act_bwd_out_shifted", ValueError, r"\bout overlaps dy or y only partly", lambda: _shifted(lambda a, b: ops.bias_act_backward(a, np.ones((10, 10), F32), out=b))),
    ("bias_act_bwd_out_over_y", ValueError, r"\bout overlaps dy or y only partly", lambda: _shifted(lambda a, b: ops.bias_act_backward(np.ones((10, 10), F32), a, out=b))),
    ("relu_mask_out_shifted", ValueError, r"\bout overlaps x only partly", lambda: _shifted(lambda a, b: ops.relu_mask(a, out=b))),
    ("relu_mask_bwd_out_shifted", ValueError, r"\bout overlaps dy only partly", lambda: _shifted(lambda a, b: ops.relu_mask_backward(a, np.ones((10, 10), bool), out=b))),
    ("conv_bwd_db_in_dw", ValueError, r"out\[2\] \(db\) must not overlap", lambda: (lambda dw: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(), out=(None, dw, dw.reshape(-1)[:4])))(np.zeros((3, 3, 3, 4), F32))),
    ("conv_bwd_dx_in_dw", ValueError, r"out\[0\] \(dx\) must not overlap", lambda: (lambda buf: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(), out=(buf[:216].reshape(2, 6, 6, 3), buf[108:216].reshape(3, 3, 3, 4), None)))(np.zeros(216, F32))),
    ("xent_loss_over_labels", ValueError, r"out\[1\] \(loss\) must not overlap", lambda: (lambda buf: ops.softmax_cross_entropy(np.zeros((64, 3)), buf[:64], out=(None, buf[1:].view(F64), None)))(np.zeros(65, np.int64))),
    # ---------------------------------------------------------------- ndarray subclasses
    # an np.matrix stays 2-D when reshaped to 1-D: the Numba kernels wrote out of bounds
    ("matrix_out_matmul", TypeError, r"\bout must be a numpy array \(a plain numpy.ndarray", lambda: ops.matmul(np.ones((30, 30)), np.ones((30, 30)), out=np.matrix(np.zeros((30, 30))))),
    ("matrix_out_relu_mask", TypeError, r"\bout must be a numpy array \(a plain", lambda: ops.relu_mask(np.arange(12.).reshape(3, 4) - 6, out=np.matrix(np.zeros((3, 4))))),
    ("matrix_out_bias_act", TypeError, r"\bout must be a numpy array \(a plain", lambda: ops.bias_act(np.ones((3, 4)), None, out=np.matrix(np.ones((3, 4))))),
    ("matrix_out_bias_act_bwd", TypeError, r"\bout must be a numpy array \(a plain", lambda: ops.bias_act_backward(np.ones((3, 4)), np.ones((3, 4)), out=np.matrix(np.ones((3, 4))))),
    ("matrix_adam_param", TypeError, r"\bparam must be a numpy ndarray \(a plain one", lambda: ops.adam_update(np.matrix(np.ones((2, 3))), np.ones((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), alpha=0.1)),
    ("masked_input", TypeError, r"\bx is a masked array", lambda: ops.bias_act(np.ma.masked_array(np.ones((3, 4)), mask=np.eye(3, 4)), None)),
    # ---------------------------------------------------------------- argmax
    ("argmax_too_big", ValueError, r"\bargmax must hold indices in \[0, 108\)", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1] + 108, (2, 6, 6, 3), 2)),
    ("argmax_negative", ValueError, r"\bargmax must hold indices", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1] - 1000, (2, 6, 6, 3), 2)),
    ("argmax_one_past", ValueError, r"\bargmax must hold indices", lambda: ops.maxpool2d_backward(*_one_past_argmax(), (2, 6, 6, 3), 2)),
    ("argmax_huge", ValueError, r"\bargmax must hold indices in \[0, 108\) \(within one sample\), received values in \[0, 4611686018427387904\]", lambda: ops.maxpool2d_backward(*_one_past_argmax(1 << 62), (2, 6, 6, 3), 2)),
    ("argmax_int64_min", ValueError, r"\bargmax must hold indices in \[0, 108\) \(within one sample\), received values in \[-9223372036854775808, ", lambda: ops.maxpool2d_backward(*_one_past_argmax(-(1 << 63)), (2, 6, 6, 3), 2)),
    ("argmax_one_past_out", ValueError, r"\bargmax must hold indices", lambda: ops.maxpool2d_backward(*_one_past_argmax(), (2, 6, 6, 3), 2, out=np.empty((2, 6, 6, 3), F32))),
    ("argmax_int32", TypeError, r"\bargmax must be the int64 array", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1].astype(np.int32), (2, 6, 6, 3), 2)),
    ("argmax_float", TypeError, r"\bargmax must be the int64 array", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1].astype(F32), (2, 6, 6, 3), 2)),
    ("argmax_uint64", TypeError, r"\bargmax must be the int64 array", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1].astype(np.uint64), (2, 6, 6, 3), 2)),
    ("argmax_list", TypeError, r"\bargmax must be the int64 array", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1].tolist(), (2, 6, 6, 3), 2)),
    ("argmax_shape", ValueError, r"\bargmax must have shape \(2, 3, 3, 3\)", lambda: ops.maxpool2d_backward(_pool_dy()[0], _pool_dy()[1][:, :2], (2, 6, 6, 3), 2)),
    # ---------------------------------------------------------------- mixed precision
    ("mix_conv_w", TypeError, r"\bw has dtype float64 but x has dtype float32", lambda: ops.conv2d_forward(x4(F32), w4(F64))),
    ("mix_conv_x", TypeError, r"\bw has dtype float32 but x has dtype float64", lambda: ops.conv2d_forward(x4(F64), w4(F32))),
    ("mix_conv_b", TypeError, r"\bb has dtype float64", lambda: ops.conv2d_forward(x4(), w4(), np.ones(4, F64))),
    ("mix_conv_bwd_dy", TypeError, r"\bdy has dtype float64", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F64), x4(), w4())),
    ("mix_conv_bwd_w", TypeError, r"\bw has dtype float64", lambda: ops.conv2d_backward(np.ones((2, 4, 4, 4), F32), x4(), w4(F64))),
    ("mix_matmul", TypeError, r"\bb has dtype float64 but a has dtype float32", lambda: ops.matmul(np.ones((2, 2), F32), np.ones((2, 2), F64))),
    ("mix_bias_act", TypeError, r"\bb has dtype float32 but x has dtype float64", lambda: ops.bias_act(np.ones((2, 3), F64), np.ones(3, F32))),
    ("mix_bias_act_bwd", TypeError, r"\by has dtype float32 but dy has dtype float64", lambda: ops.bias_act_backward(np.ones((2, 3), F64), np.ones((2, 3), F32))),
    # ---------------------------------------------------------------- non-arrays
    ("x_string", TypeError, r"\bx must have dtype float32 or float64", lambda: ops.im2col("abc", 1)),
    ("x_ragged_list", TypeError, r"\bx must be a float32 or float64 array", lambda: ops.bias_act([[1.0], [1.0, 2.0]], None)),
    ("a_none", TypeError, r"\ba must have dtype float32 or float64", lambda: ops.matmul(None, np.ones((2, 2), F32))),
    ("x_array_raises", TypeError, r"\bx must be a float32 or float64 array.*RuntimeError", lambda: ops.bias_act(_BadArray(), None)),
    # ---------------------------------------------------------------- softmax_cross_entropy target
    # a masked label passed the range check (min and max skip it), then the reference raised
    # IndexError and C and Numba returned NaN
    ("target_masked", TypeError, r"\btarget is a masked array", lambda: ops.softmax_cross_entropy(np.zeros((4, 5), F32), np.ma.array([0, 1, 2, 7], mask=[0, 0, 0, 1]))),
    ("argmax_masked", TypeError, r"\bargmax is a masked array", lambda: ops.maxpool2d_backward(np.ones((1, 1, 1, 1), F32), np.ma.array(np.zeros((1, 1, 1, 1), np.int64), mask=[[[[1]]]]), (1, 2, 2, 1), 2)),
    ("mask_masked", TypeError, r"\bmask is a masked array", lambda: ops.relu_mask_backward(np.ones(3, F32), np.ma.array([True, False, True], mask=[0, 1, 0]))),
    ("target_masked_float", TypeError, r"\btarget is a masked array", lambda: ops.softmax_cross_entropy(np.zeros((2, 3), F32), np.ma.array(np.eye(2, 3, dtype=F32)))),
    ("target_ragged_list", TypeError, r"\btarget must be integer labels or float targets.*received list", lambda: ops.softmax_cross_entropy(np.zeros((2, 3), F32), [[0], [1, 2]])),
    ("target_array_raises", TypeError, r"\btarget must be integer labels or float targets.*RuntimeError", lambda: ops.softmax_cross_entropy(np.zeros((2, 3), F32), _BadArray())),
]


class _BadArray:
    """An object whose conversion to an array fails with an arbitrary exception."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("no array here")


def _shifted(call):
    """``call(a, b)`` with a and b (10, 10) float32 views of one buffer, b one element
    after a."""
    buf = np.arange(-50, 51, dtype=F32)
    return call(buf[:100].reshape(10, 10), buf[1:].reshape(10, 10))


def _one_past_argmax(value=6 * 6 * 3):
    """The pooled gradient and argmax of _pool_dy with one index set to ``value`` (by
    default exactly one past the end of a sample), in the last sample."""
    y, am = _pool_dy()
    am = am.copy()
    am[1, 2, 2, 2] = value
    return y, am


@pytest.mark.parametrize("exc,pattern,call", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(backend, exc, pattern, call):
    with pytest.raises(exc, match=pattern):
        call()


def _all_ops_with(arr_for):
    """(name, call, solo) for every array-taking op with argument ``name`` replaced by
    ``arr_for(good_value)``; ``solo`` when it is the op's only float array."""
    x, w, b = x4(), w4(), np.ones(4, F32)
    dy = np.ones((2, 4, 4, 4), F32)
    yp, am = _pool_dy()
    m23 = np.ones((2, 3), F32)
    return [
        ("x", lambda: ops.conv2d_forward(arr_for(x), w), False),
        ("w", lambda: ops.conv2d_forward(x, arr_for(w)), False),
        ("b", lambda: ops.conv2d_forward(x, w, arr_for(b)), False),
        ("dy", lambda: ops.conv2d_backward(arr_for(dy), x, w), False),
        ("x", lambda: ops.conv2d_backward(dy, arr_for(x), w), False),
        ("w", lambda: ops.conv2d_backward(dy, x, arr_for(w)), False),
        ("x", lambda: ops.im2col(arr_for(x), 3), True),
        ("cols", lambda: ops.col2im(arr_for(np.ones((32, 27), F32)), x.shape, 3), True),
        ("x", lambda: ops.maxpool2d_forward(arr_for(x), 2), True),
        ("dy", lambda: ops.maxpool2d_backward(arr_for(yp), am, x.shape, 2), True),
        ("x", lambda: ops.avgpool2d_forward(arr_for(x), 2), True),
        ("dy", lambda: ops.avgpool2d_backward(arr_for(yp), x.shape, 2), True),
        ("a", lambda: ops.matmul(arr_for(m23), m23.T.copy()), False),
        ("b", lambda: ops.matmul(m23, arr_for(m23.T.copy())), False),
        ("x", lambda: ops.bias_act(arr_for(m23), None), True),
        ("x", lambda: ops.bias_act(arr_for(m23), np.ones(3, F32)), False),
        ("b", lambda: ops.bias_act(m23, arr_for(np.ones(3, F32))), False),
        ("dy", lambda: ops.bias_act_backward(arr_for(m23), m23), False),
        ("y", lambda: ops.bias_act_backward(m23, arr_for(m23)), False),
    ]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=DT_IDS)
def test_non_float_dtypes_rejected(backend, dtype):
    """Integer, bool, object, complex and float16 arrays are rejected, never cast."""
    for name, call, _ in _all_ops_with(lambda a: a.astype(dtype)):
        with pytest.raises(TypeError, match=rf"\b{name} must have dtype float32 or float64"):
            call()


def test_float64_never_mixed_with_float32(backend):
    """Any one float64 argument among float32 ones is a TypeError naming an argument."""
    checked = 0
    for name, call, solo in _all_ops_with(lambda a: a.astype(F64)):
        if solo:  # the op's only float array: all-float64 is valid
            call()
            continue
        # the message names the float64 argument or the one it disagrees with
        with pytest.raises(TypeError, match=r"\b(x|w|b|dy|y|a) has dtype float(32|64) but "
                                            r"(x|a|dy) has dtype float(32|64)"):
            call()
        checked += 1
    assert checked == 12


def test_backend_still_works_after_bad_input(backend):
    for _, _, _, call in CASES:
        try:
            call()
        except (TypeError, ValueError):
            pass
    a = np.arange(12, dtype=F64).reshape(3, 4)
    b = np.arange(8, dtype=F64).reshape(4, 2)
    assert_close(ops.matmul(a, b), a @ b, k=4, scale=77)
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 2)).astype(F32)
    y, _ = ops.maxpool2d_forward(x, 2)
    ry, _ = reference(ops.maxpool2d_forward, x, 2)
    np.testing.assert_array_equal(y, ry)
    assert _backend.active_name() == backend


# ------------------------------------------------------------------- backend selection
@pytest.mark.parametrize("name", ["cuda", "", "C ", "numpy2", None, 1, "tensorflow"])
def test_unknown_backend_name(name):
    before = _backend.active_name()
    with pytest.raises(ValueError, match=r"\bbackend must be one of"):
        fastnn.set_backend(name)
    with pytest.raises(ValueError, match=r"\bbackend must be one of"):
        with fastnn.use_backend(name):
            pass  # pragma: no cover
    assert _backend.active_name() == before


@pytest.mark.parametrize("name", ["c", "numba"])
def test_unavailable_backend_is_import_error(name, monkeypatch):
    """An unavailable backend raises ImportError saying why (and changes nothing).
    Unavailability is simulated through the registry's own bookkeeping."""
    before = _backend.active_name()
    monkeypatch.delitem(_backend._loaded, name, raising=False)
    monkeypatch.setitem(_backend._errors, name, "OSError: simulated missing library")
    with pytest.raises(ImportError, match=rf"backend '{name}' is unavailable: OSError: "
                                          "simulated missing library"):
        fastnn.set_backend(name)
    with pytest.raises(ImportError, match=rf"backend '{name}' is unavailable"):
        with fastnn.use_backend(name):
            pass  # pragma: no cover
    assert _backend.active_name() == before
    assert name not in _backend.available()
    with fastnn.use_backend("numpy"):  # (the active backend may be the "missing" one)
        assert fastnn.backend_info()["errors"][name] == "OSError: simulated missing library"


def test_matrix_inputs_are_read_as_plain_arrays(backend):
    """An np.matrix input gives the plain array's result in every backend (Numba raised a
    TypingError, and softmax_cross_entropy failed on the NumPy backend only)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(ops.matmul(np.matrix(a), np.matrix(b)), ops.matmul(a, b))
    np.testing.assert_array_equal(ops.bias_act(np.matrix(a), None), ops.bias_act(a, None))
    for got, want in zip(ops.softmax_cross_entropy(np.matrix(a), np.array([0, 1, 2, 3])),
                         ops.softmax_cross_entropy(a, np.array([0, 1, 2, 3]))):
        np.testing.assert_array_equal(got, want)
    # a matrix mask (Numba: an error from inside the kernel, or a SystemError)
    for n in (3, 300):
        dy = rng.standard_normal((n, n))
        mask = dy > 0.5
        np.testing.assert_array_equal(ops.relu_mask_backward(dy, np.matrix(mask)),
                                      ops.relu_mask_backward(dy, mask))


@pytest.mark.parametrize("missing", ["_cfastnn*", "_fastcall*"])
def test_missing_extension_warning_says_why(tmp_path, missing):
    """fastnn imported from a tree without one of the compiled extensions warns that they
    are not both there (Python's own message blamed "a circular import")."""
    shutil.copytree(Path(fastnn.__file__).parent, tmp_path / "fastnn",
                    ignore=shutil.ignore_patterns(missing, "__pycache__", "data"))
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-W", "always", "-c",
                           "import fastnn; print(fastnn.backend_info()['active'])"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("numba", "numpy")
    assert "the C extension could not be loaded (ImportError: the compiled extensions " \
           "fastnn/_cfastnn*.so and _fastcall*.so are not both there" in proc.stderr, \
        proc.stderr
    assert "circular" not in proc.stderr


@pytest.mark.parametrize("n", [0, -1, 1.0, 2.5, True, "2", None, 1025, 10**9, 2**31])
def test_set_num_threads_rejects(n, restore_threads):
    with pytest.raises(ValueError, match=r"\bn must be an int >= 1 and <= 1024, received"):
        fastnn.set_num_threads(n)


def test_backend_names_case_insensitive():
    with fastnn.use_backend("NumPy") as mod:
        assert _backend.active_name() == "numpy"
        assert mod is _backend.load("numpy")


def test_softmax_cross_entropy_reports_labels_as_given():
    with pytest.raises(ValueError, match=r"received values in \[0, 9223372036854775809\]"):
        ops.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 2**63 + 1], np.uint64))


def test_conv_geometry_checks_like_the_ops():
    """ops.conv_geometry is public: lower-case layouts as every op, and its x_shape and
    layout checked (layout="bogus" was read as NCHW, 1.7 truncated)."""
    assert ops.conv_geometry((1, 5, 5, 3), 3, layout="nhwc") == \
        ops.conv_geometry((1, 5, 5, 3), 3, layout="NHWC")
    assert ops.conv_geometry((1, 3, 5, 5), 3, layout="NCHW").c == 3
    with pytest.raises(ValueError, match="layout must be 'NHWC' or 'NCHW'"):
        ops.conv_geometry((1, 5, 5, 3), 3, layout="bogus")
    with pytest.raises(TypeError, match="x_shape must be a tuple of 4 ints"):
        ops.conv_geometry((1.7, 5, 5, 3), 3)
    with pytest.raises(ValueError, match="x_shape must be a tuple of 4 non-negative ints"):
        ops.conv_geometry((1, 5, 5), 3)


def test_thread_counts_beyond_the_cap(restore_threads, tmp_path):
    """OMP_NUM_THREADS beyond 1024 is capped there by the C backend (100000 asked for a
    36 GiB workspace for a 300 x 300 product); set_num_threads takes NumPy integers."""
    fastnn.set_num_threads(np.int64(2))
    assert fastnn.get_num_threads() in (1, 2)
    code = ("import fastnn, numpy as np; from fastnn import ops; "
            "print(fastnn.get_num_threads(), ops.matmul(np.ones((300, 300)), "
            "np.ones((300, 300)))[0, 0])")
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    env.update(OMP_NUM_THREADS="100000", FASTNN_BACKEND="c")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if "c" not in _backend.available():
        pytest.skip("the C backend is not built here")
    # (cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the
    # source tree's fastnn/ has no compiled extension on CI)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1024", "300.0"], proc.stderr


def _misaligned(a):
    """A copy of ``a`` in a byte buffer at offset 1: C-contiguous but misaligned."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(raw.data, a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_arrays_are_copied_or_refused(dtype):
    """Arrays viewing a byte buffer at an odd offset reached the C kernels, whose loads of
    them are undefined behaviour (UBSan: 'load of misaligned address'; found by a fuzzing
    review): inputs are copied to aligned arrays, matmul's out is computed aside and
    copied back, other ops refuse a misaligned out. Results equal the aligned ones."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 8)).astype(dtype)
    np.testing.assert_array_equal(ops.matmul(_misaligned(a), _misaligned(a)), ops.matmul(a, a))
    out = _misaligned(np.zeros((8, 8), dtype))
    ops.matmul(a, a, out=out)
    np.testing.assert_array_equal(out, ops.matmul(a, a))
    x = rng.standard_normal((2, 5, 5, 3)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, 4)).astype(dtype)
    np.testing.assert_array_equal(ops.conv2d_forward(_misaligned(x), _misaligned(w)),
                                  ops.conv2d_forward(x, w))
    y, arg = ops.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(ops.maxpool2d_backward(_misaligned(y), _misaligned(arg),
                                                         x.shape, 2),
                                  ops.maxpool2d_backward(y, arg, x.shape, 2))
    with pytest.raises(ValueError, match="aligned"):
        ops.relu_mask(x, out=_misaligned(np.zeros_like(x)))
    # adam_update: a misaligned grad is copied; param, m, v (updated in place) are refused
    p, g = rng.standard_normal(100).astype(dtype), rng.standard_normal(100).astype(dtype)
    state = [p.copy(), np.zeros(100, dtype), np.zeros(100, dtype)]
    ops.adam_update(state[0], _misaligned(g), state[1], state[2], alpha=0.1)
    ref = [p.copy(), np.zeros(100, dtype), np.zeros(100, dtype)]
    ops.adam_update(ref[0], g, ref[1], ref[2], alpha=0.1)
    for got, want in zip(state, ref):
        np.testing.assert_array_equal(got, want)
    for i, name in enumerate(("param", "m", "v")):
        args = [p.copy(), g, np.zeros(100, dtype), np.zeros(100, dtype)]
        args[0 if i == 0 else i + 1] = _misaligned(args[0 if i == 0 else i + 1])
        with pytest.raises(ValueError, match=f"{name} must be aligned"):
            ops.adam_update(*args, alpha=0.1)


def test_results_beyond_the_address_space_are_named(backend):
    """A result no machine can hold is a MemoryError naming it (NumPy's ValueError 'array
    is too big' named nothing); a geometry too large names the input's shape."""
    with pytest.raises(MemoryError, match="the column matrix would be an array of shape"):
        ops.im2col(np.ones((1, 1, 1, 1)), 1, padding=((0, 2**31 - 1), (0, 2**30)))
    with pytest.raises(MemoryError, match="the result would be"):
        ops.matmul(np.ones((2**31, 0)), np.ones((0, 2**31)))
    with pytest.raises(MemoryError, match="out would be an array of shape"):
        ops.avgpool2d_backward(np.ones((1, 1, 1, 1), np.float32), (1, 2**31 - 1, 2**31 - 1, 1),
                               2**31 - 1)
    with pytest.raises(ValueError, match=r"input \(N, H, W, C\) = \(4611686018427387904"):
        ops.conv_geometry((2**62, 1, 1, 1), 1)
