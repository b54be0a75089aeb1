"""Image augmentation: exact transforms checked against NumPy's own flips/rotations/rolls,
layer semantics (random in training, identity or centre crop at inference), seeding, use
inside fit, and bad arguments."""
import numpy as np
import pytest

import fastnn
from fastnn import augmentation as aug
from fastnn.layers import Conv2D, Dense, Flatten, Input
from fastnn.models import Sequential


def _img(n=4, h=6, w=6, c=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)


def test_rotation_quarter_turn_is_rot90():
    x = _img()
    for interp in ("bilinear", "nearest"):
        y = aug.random_rotation(x, (0.25, 0.25), rng=0, interpolation=interp)
        # Keras: a positive factor turns counter-clockwise (as np.rot90 with k=1)
        np.testing.assert_allclose(y, np.rot90(x, k=1, axes=(1, 2)), atol=1e-5)
        y = aug.random_rotation(x, (-0.25, -0.25), rng=0, interpolation=interp)
        np.testing.assert_allclose(y, np.rot90(x, k=-1, axes=(1, 2)), atol=1e-5)
    one = np.zeros((1, 5, 5, 1), np.float32)
    one[0, 0, 2, 0] = 1                                   # top centre
    y = aug.random_rotation(one, (0.25, 0.25), rng=0, fill_mode="constant")
    assert y[0, 2, 0, 0] == pytest.approx(1.0)             # to the left edge's centre


def test_zero_rotation_and_shift_are_identity():
    x = _img()
    np.testing.assert_allclose(aug.random_rotation(x, (0.0, 0.0), rng=1), x, atol=1e-6)
    np.testing.assert_allclose(aug.random_shift(x, 0.0, 0.0, rng=1), x, atol=1e-6)


def test_integer_shift_matches_roll_in_wrap_mode():
    x = _img(h=10, w=10)
    # height_factor 0.2 of 10 rows = exactly 2 rows down; width 0.3 -> 3 columns right
    y = aug.random_shift(x, (0.2, 0.2), (0.3, 0.3), rng=0, fill_mode="wrap")
    np.testing.assert_allclose(y, np.roll(x, (2, 3), axis=(1, 2)), atol=1e-5)
    yc = aug.random_shift(x, (0.2, 0.2), (0.0, 0.0), rng=0, fill_mode="constant")
    assert np.all(yc[:, :2] == 0) and np.allclose(yc[:, 2:], x[:, :-2], atol=1e-6)


def test_nearest_rounds_half_pixels_away_from_zero():
    """A shift of 1.5 rows with nearest interpolation moves every row by 2 (1 upward), as
    Keras 3.15's RandomTranslation (TensorFlow rounds halves away from zero): NumPy's
    halves to even repeated and dropped rows, [-1, 0, 0, 20, 20, 40]. Wrap mode rounds
    before it wraps (TensorFlow clamps the wrapped coordinate to the last pixel first:
    not followed)."""
    x = (np.arange(6, dtype=np.float32) * 10).reshape(1, 6, 1, 1)
    y = aug.random_shift(x, (0.25, 0.25), (0.0, 0.0), rng=0, fill_mode="constant",
                         fill_value=-1.0, interpolation="nearest")
    np.testing.assert_array_equal(y.ravel(), [-1, -1, 10, 20, 30, 40])
    y = aug.random_shift(x, (-0.25, -0.25), (0.0, 0.0), rng=0, fill_mode="nearest",
                         interpolation="nearest")
    np.testing.assert_array_equal(y.ravel(), [20, 30, 40, 50, 50, 50])
    # reflect (Keras's default fill): the coordinate reflected, then rounded, as
    # TensorFlow (rounded first, the last row read 40); Keras 3.15 equal on every shift
    # of k/16 of 6, 7 and 8 rows, every fill, both interpolations
    for shift, want in ((-0.25, [20, 30, 40, 50, 50, 50]), (0.25, [10, 0, 10, 20, 30, 40]),
                        (-0.75, [50, 50, 50, 40, 30, 20])):
        y = aug.random_shift(x, (shift, shift), (0.0, 0.0), rng=0, fill_mode="reflect",
                             interpolation="nearest")
        np.testing.assert_array_equal(y.ravel(), want, err_msg=str(shift))


def test_flip_and_crop():
    x = _img(n=64)
    y = aug.random_flip(x, "horizontal", rng=3)
    flipped = np.array([np.array_equal(y[i], x[i, :, ::-1]) for i in range(64)])
    same = np.array([np.array_equal(y[i], x[i]) for i in range(64)])
    assert np.all(flipped | same) and 10 < flipped.sum() < 54
    c = aug.random_crop(x, 4, 5, rng=0)
    assert c.shape == (64, 4, 5, 2)
    for i in range(3):  # each crop is a window of its own image
        found = any(np.array_equal(c[i], x[i, t:t + 4, l:l + 5])
                    for t in range(3) for l in range(2))
        assert found


def test_layers_identity_at_inference_and_seeded():
    x = _img()
    for layer in (aug.RandomFlip(seed=1), aug.RandomTranslation(0.2, 0.2, seed=1),
                  aug.RandomRotation(0.1, seed=1)):
        assert layer(x, training=False) is x or np.array_equal(layer(x, training=False), x)
        assert not np.array_equal(layer(x, training=True), x)
    a = aug.RandomRotation(0.1, seed=5)(x, training=True)
    b = aug.RandomRotation(0.1, seed=5)(x, training=True)
    np.testing.assert_array_equal(a, b)
    crop = aug.RandomCrop(4, 4)
    assert crop(x, training=False).shape == (4, 4, 4, 2)
    np.testing.assert_array_equal(crop(x, training=False), x[:, 1:5, 1:5])


def test_augmentation_inside_fit():
    fastnn.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    model = Sequential([Input(shape=(8, 8, 1)), aug.RandomFlip("horizontal", seed=0),
                        aug.RandomRotation(0.05, seed=0), Conv2D(4, 3, activation="relu"),
                        Flatten(), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    hist = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert model.predict(x).shape == (64, 2)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: aug.random_flip(np.zeros((3, 3)), "horizontal"), ValueError, "NHWC"),
    (lambda: aug.random_flip(np.zeros((1, 2, 3, 3, 1)), "horizontal"), ValueError,
     "or one image"),
    (lambda: aug.random_flip(_img(), "diagonal"), ValueError, "mode"),
    (lambda: aug.random_shift(_img(), 1.5, 0.1), ValueError, "height_factor"),
    (lambda: aug.random_rotation(_img(), "a lot"), TypeError, "factor"),
    (lambda: aug.random_crop(_img(), 10, 2), ValueError, "crop size"),
    (lambda: aug.RandomRotation(0.1, fill_mode="mirror"), ValueError, "fill_mode"),
    (lambda: aug.affine_transform(_img(), np.zeros((4, 2, 3)), interpolation="cubic"),
     ValueError, "interpolation"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_constructors_check_arguments_and_leave_the_global_generator_alone():
    """RandomFlip() validated its mode by a call that drew from fastnn's global generator
    (so adding one changed every later seeded initialisation); interpolation is checked at
    construction; NumPy scalars are factors; a negative single factor is an error."""
    from fastnn.utils import get_rng, set_random_seed
    set_random_seed(0)
    a = get_rng().random()
    set_random_seed(0)
    aug.RandomFlip()
    assert get_rng().random() == a
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' or 'nearest'"):
        aug.RandomTranslation(0.1, 0.1, interpolation="bicubic")
    with pytest.raises(ValueError, match="interpolation must be"):
        aug.RandomRotation(0.1, interpolation="bicubic")
    assert aug.RandomRotation(np.float32(0.1)).factor == np.float32(0.1)
    with pytest.raises(ValueError, match=r"height_factor must be >= 0"):
        aug.RandomTranslation(-0.2, 0.1)
    with pytest.raises(TypeError, match=r"factor must be a float or a pair"):
        aug.RandomRotation(("a", 0.1))


@pytest.mark.parametrize("make", [
    lambda df: aug.RandomFlip(seed=4, data_format=df),
    lambda df: aug.RandomFlip("vertical", seed=4, data_format=df),
    lambda df: aug.RandomTranslation(0.3, (-0.2, 0.4), seed=3, data_format=df),
    lambda df: aug.RandomRotation(0.25, fill_mode="constant", fill_value=-1.0, seed=3,
                                  data_format=df),
    lambda df: aug.RandomCrop(3, 2, seed=1, data_format=df),
])
def test_channels_first_transforms_the_image_axes(make):
    """data_format="channels_first" (the README said so; the layers refused it, and an
    NCHW batch was rotated or shifted over C and H): the same transform as on the NHWC
    batch, in training and at inference; configs keep it (Keras 3 saves it in every
    augmentation layer's config)."""
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float32).reshape(2, 3, 5, 4)     # NCHW
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    first, last = make("channels_first"), make(None)
    for training in (True, False):
        a, b = first(x, training=training), last(nhwc, training=training)
        np.testing.assert_array_equal(a, b.transpose(0, 3, 1, 2))
        assert a.flags.c_contiguous
    again = type(first).from_config(first.get_config())
    assert again.data_format == "channels_first" and last.get_config()["data_format"] == \
        "channels_last"
    if isinstance(first, aug.RandomCrop):
        assert first.compute_output_shape((None, 3, 5, 4)) == (None, 3, 3, 2)
    with pytest.raises(ValueError, match="data_format"):
        make("nchw")


def test_flip_both_ways_is_one_coin_per_image_as_keras3():
    """RandomFlip("horizontal_and_vertical") flips a chosen image both ways, a half turn,
    as Keras 3.15 does (one draw per image for both flips); it drew the two independently
    (tf.keras 2), giving four outcomes instead of two."""
    x = np.tile(np.arange(4.0, dtype=np.float32).reshape(1, 2, 2, 1), (400, 1, 1, 1))
    out = aug.RandomFlip(seed=0)(x, training=True)
    seen = {tuple(v.ravel()) for v in out}
    assert seen == {(0.0, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.0)}


@pytest.mark.parametrize("call, exc, match", [
    (lambda: aug.RandomTranslation(float("nan"), 0.1), ValueError, "height_factor"),
    (lambda: aug.RandomRotation((0.0, float("inf"))), ValueError, "factor must be finite"),
    (lambda: aug.random_rotation(_img(), 1e308, rng=0), ValueError, "finite range"),
    (lambda: aug.RandomRotation((-1e308, 1e308)), ValueError, "finite range"),
    (lambda: aug.RandomCrop(2.5, 3), TypeError, "height must be an int"),
    (lambda: aug.RandomCrop("a", 3), TypeError, "height must be an int"),
    (lambda: aug.RandomCrop(3, None), TypeError, "width must be an int"),
    (lambda: aug.RandomCrop(3, 0), ValueError, "width must be >= 1"),
    (lambda: aug.random_crop(_img(), 2.5, 2), TypeError, "height must be an int"),
    (lambda: aug.center_crop(_img(), 2, np.float64(2)), TypeError, "width must be an int"),
    (lambda: aug.RandomRotation(0.1, fill_value="a"), TypeError, "fill_value"),
    (lambda: aug.random_shift(_img(), 0.1, 0.1, fill_value=None), TypeError, "fill_value"),
    (lambda: aug.random_flip(np.zeros((1, 2, 2, 1), dtype="U1")), TypeError, "numeric"),
])
def test_more_bad_arguments_named(call, exc, match):
    """NaN or infinite factors (an OverflowError from NumPy at the first training call), a
    float or string crop size (silently truncated, or '<' not supported), a non-numeric
    fill_value (a UFuncTypeError at call time): errors naming the argument up front."""
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("data_format", [None, "channels_first"])
def test_one_image_as_keras(data_format):
    """Keras 3's augmentation layers take one image, (H, W, C) (or (C, H, W)), and give one
    back; fastnn's asked for a batch. One image is the batch of one, seed for seed."""
    batch = _img(1, 6, 6, 2)
    if data_format:
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    one = batch[0]
    kw = dict(data_format=data_format)
    for fn, args in ((aug.random_flip, ("horizontal", 3)), (aug.random_shift, (0.2, 0.2, 3)),
                     (aug.random_rotation, (0.1, 3)), (aug.random_crop, (4, 3, 3)),
                     (aug.center_crop, (4, 3))):
        got = fn(one, *args, **kw)
        assert got.shape == fn(batch, *args, **kw).shape[1:], fn.__name__
        np.testing.assert_array_equal(got, fn(batch, *args, **kw)[0])
    for layer in (aug.RandomFlip(seed=1, **kw), aug.RandomTranslation(0.1, 0.1, seed=1, **kw),
                  aug.RandomRotation(0.1, seed=1, **kw), aug.RandomCrop(3, 4, seed=1, **kw)):
        out = layer(one, training=True)
        assert out.ndim == 3
    assert aug.RandomCrop(3, 4, **kw)(one, training=False).shape == \
        ((2, 3, 4) if data_format else (3, 4, 2))


def test_center_crop_never_returns_a_view():
    """A crop of the whole image (or a contiguous window) was a view: writing to it changed
    the caller's batch (Keras returns a new tensor)."""
    for data_format in (None, "channels_first"):
        x = _img(2, 4, 4, 4)
        keep = x.copy()
        for h, w in ((4, 4), (2, 4)):
            y = aug.center_crop(x, h, w, data_format=data_format)
            y += 100
            np.testing.assert_array_equal(x, keep)
        y = aug.RandomCrop(4, 4)(x, training=False)
        assert not np.shares_memory(x, y)


def test_numpy_scalar_arguments_save_and_load(tmp_path):
    """NumPy scalars given to the constructors went into the config as they were, and
    model.save failed ('Object of type float32 is not JSON serializable')."""
    from fastnn.layers import Dropout
    from fastnn.models import load_model
    model = Sequential([Input(shape=(4, 4, 1)), aug.RandomRotation(np.float32(0.1),
                                                                   seed=np.int64(3)),
                        aug.RandomTranslation((np.float32(-0.1), 0.1), np.float64(0.1),
                                              fill_value=np.float32(0.5)),
                        aug.RandomFlip(seed=np.int32(2)), Flatten(),
                        Dropout(np.float32(0.5), noise_shape=(None, np.int64(16)),
                                seed=np.int64(2)), Dense(2)])
    model.save(tmp_path / "m.fastnn")
    back = load_model(tmp_path / "m.fastnn")
    cfg = back.layers[0].get_config()
    assert cfg["factor"] == pytest.approx(0.1) and cfg["seed"] == 3
    assert list(back.layers[1].get_config()["height_factor"]) == pytest.approx([-0.1, 0.1])
    assert back.layers[-2].get_config()["noise_shape"] in ((None, 16), [None, 16])
