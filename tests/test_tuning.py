"""Hyper-parameter search: every grid combination trained once, ranking by the objective in
the right direction, repeatable with a seed, fit parameters routed to fit, results table and
CSV, bad arguments."""
import csv
import math
import os

import numpy as np
import pytest

from fastnn import tuning
from fastnn.layers import Dense
from fastnn.models import Sequential
from fastnn.optimizers import Adam


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


calls = []


def build(units=4, learning_rate=1e-2):
    calls.append((units, learning_rate))
    model = Sequential([Dense(units, activation="relu", input_dim=4),
                        Dense(2, activation="softmax")])
    model.compile(Adam(learning_rate), "sparse_categorical_crossentropy", ["accuracy"])
    return model


def test_grid_search_covers_grid_and_ranks():
    calls.clear()
    x, y = _data()
    res = tuning.grid_search(build, {"units": [2, 8], "learning_rate": [1e-4, 3e-2]}, x, y,
                             validation_split=0.25, epochs=3, objective="val_accuracy")
    assert sorted(calls) == sorted([(2, 1e-4), (2, 3e-2), (8, 1e-4), (8, 3e-2)])
    scores = [t["score"] for t in res.trials]
    assert scores == sorted(scores, reverse=True)          # accuracy: higher is better
    assert res.mode == "max" and res.best_score == scores[0]
    assert res.best_params in [t["params"] for t in res.trials]
    assert res.best_model is not None
    loss_res = tuning.grid_search(build, {"learning_rate": [1e-4, 3e-2]}, x, y,
                                  validation_data=(x[:50], y[:50]), epochs=2)
    losses = [t["score"] for t in loss_res.trials]
    assert loss_res.mode == "min" and losses == sorted(losses)


def test_search_is_repeatable_and_routes_fit_params(tmp_path):
    x, y = _data()
    grid = {"units": [3], "batch_size": [16, 64], "epochs": [1, 2]}
    a = tuning.grid_search(build, grid, x, y, validation_split=0.2)
    b = tuning.grid_search(build, grid, x, y, validation_split=0.2)
    assert [t["score"] for t in a.trials] == [t["score"] for t in b.trials]
    assert {t["params"]["epochs"] for t in a.trials} == {1, 2}
    text = a.table()
    for column in ("batch_size", "val_loss", "seconds"):  # the results table's columns
        assert column in text, column
    path = tmp_path / "results.csv"
    a.to_csv(path)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 4 and rows[0]["rank"] == "1"


def test_to_csv_writes_through_a_symlink_and_leaves_no_temp_file(tmp_path):
    """to_csv wrote `<path>.tmp<pid>` and renamed it over the path: a symbolic link became a
    file, and a failing write left the temporary file behind."""
    x, y = _data()
    res = tuning.grid_search(build, {"units": [3]}, x, y, validation_split=0.2)
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("old")
    os.symlink(real, link)
    res.to_csv(link)
    assert os.path.islink(link)
    assert list(csv.DictReader(open(real)))[0]["rank"] == "1"
    res.trials[0]["params"]["units"] = object.__new__(_Unprintable)   # the write fails
    with pytest.raises(RuntimeError, match="unprintable"):
        res.to_csv(link)
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "real.csv"]
    assert list(csv.DictReader(open(real)))[0]["rank"] == "1"         # the old file stays


class _Unprintable:
    def __str__(self):
        raise RuntimeError("unprintable")

    __repr__ = __str__


def test_random_search_draws_from_distributions():
    calls.clear()
    x, y = _data()
    res = tuning.random_search(build, {"units": [2, 4, 8],
                                       "learning_rate": lambda rng: 10 ** rng.uniform(-3, -1)},
                               x, y, n_iter=5, epochs=1, seed=3)
    assert len(res.trials) == 5 and len(calls) == 5
    assert all(u in (2, 4, 8) and 1e-3 <= lr <= 1e-1 for u, lr in calls)
    again = tuning.random_search(build, {"units": [2, 4, 8],
                                         "learning_rate": lambda rng: 10 ** rng.uniform(-3, -1)},
                                 x, y, n_iter=5, epochs=1, seed=3)
    assert [t["params"] for t in res.trials] == [t["params"] for t in again.trials]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(param_grid={}), ValueError, "param_grid"),
    (dict(param_grid={"units": 3}), ValueError, "param_grid"),
    (dict(param_grid={"units": [2]}, validation_split=0.0), ValueError, "validation"),
    (dict(param_grid={"units": [2]}, objective="val_f9"), ValueError, "objective"),
    (dict(param_grid={"units": [2]}, mode="up"), ValueError, "mode"),
])
def test_bad_arguments(kwargs, exc, match):
    x, y = _data(40)
    with pytest.raises(exc, match=match):
        tuning.grid_search(build, x=x, y=y, epochs=1, **kwargs)


def test_numpy_arrays_and_ranges_are_choices():
    """np.logspace(...) or range(...) as a list of choices: random_search passed the whole
    array as one fixed value to every trial, and grid_search refused it."""
    x, y = _data(60)
    res = tuning.random_search(build, {"learning_rate": np.logspace(-3, -2, 4),
                                       "units": range(2, 5)},
                               x, y, n_iter=4, epochs=1, seed=1)
    for t in res.trials:
        assert type(t["params"]["learning_rate"]) is float
        assert t["params"]["learning_rate"] in np.logspace(-3, -2, 4).tolist()
        assert t["params"]["units"] in (2, 3, 4)
    grid = tuning.grid_search(build, {"units": np.array([2, 3])}, x, y, epochs=1)
    assert sorted(t["params"]["units"] for t in grid.trials) == [2, 3]
    assert all(type(t["params"]["units"]) is int for t in grid.trials)


def test_fit_kwargs_may_not_set_what_the_search_sets():
    x, y = _data(40)
    for kw in ({"verbose": 1}, {"validation_split": 0.1}, {"epochs": 3}):
        with pytest.raises(ValueError, match=r"fit_kwargs must not set \['"):
            tuning.grid_search(build, {"units": [2]}, x, y, epochs=1, fit_kwargs=kw)


class _Scored:
    """A stand-in model whose fit logs val_loss = s (no training)."""

    def __init__(self, s):
        self.s, self.optimizer = s, object()

    def fit(self, *args, **kwargs):
        class H:
            history = {"val_loss": [self.s]}
        return H()


@pytest.mark.parametrize("mode, scores", [("min", [float("nan"), float("inf")]),
                                          ("max", [float("nan"), -float("inf")]),
                                          ("min", [2.0, float("nan"), 1.0, 1.0])])
def test_best_model_is_the_best_trial(mode, scores):
    """The ranking put NaN last (as +-inf) while the running choice of best_model took any
    number over NaN but NaN over nothing: with scores [nan, inf] best_params said nan and
    best_model was the inf trial's. One order now serves both; ties go to the first."""
    x, y = _data(8)
    res = tuning.grid_search(lambda s: _Scored(s), {"s": scores}, x, y,
                             validation_data=(x, y), mode=mode)
    best = res.trials[0]["params"]["s"]
    assert res.best_model.s is best or (res.best_model.s == best)
    assert not math.isnan(res.best_model.s)


def test_search_arguments_checked():
    x, y = _data(8)
    with pytest.raises(TypeError, match="objective must be the name"):
        tuning.grid_search(build, {"units": [2]}, x, y, objective=3)
    with pytest.raises(TypeError, match="n_iter must be an int"):
        tuning.random_search(build, {"units": [2]}, x, y, n_iter=2.0)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        tuning.random_search(build, {"units": [2]}, x, y, n_iter=np.int64(0))
    res = tuning.random_search(lambda s: _Scored(s), {"s": [1.0, 2.0]}, x, y,
                               validation_data=(x, y), n_iter=np.int64(2))
    assert len(res.trials) == 2


def test_random_search_without_seed_follows_the_global_generator():
    """seed=None drew the candidates from an OS-seeded generator, so set_random_seed did
    not make such a search repeatable (everything else random in fastnn follows it)."""
    from fastnn.utils import set_random_seed
    x, y = _data(8)
    dist = {"s": lambda rng: float(rng.uniform())}
    runs = []
    for _ in range(2):
        set_random_seed(7)
        res = tuning.random_search(lambda s: _Scored(s), dist, x, y, validation_data=(x, y),
                                   n_iter=3, seed=None)
        runs.append(sorted(t["params"]["s"] for t in res.trials))
    assert runs[0] == runs[1]


def test_a_parameter_named_like_a_logged_value_keeps_its_column(tmp_path):
    """A parameter called ``loss`` (or ``rank``, ``seconds``) used to be overwritten by the
    metric of that name in rows(), table() and the CSV."""
    x, y = _data()

    def build_loss(loss, rank):
        return build(units=loss)
    res = tuning.grid_search(build_loss, {"loss": [2, 3], "rank": [7]}, x, y, epochs=1)
    for row in res.rows():
        assert row["param_loss"] in (2, 3) and row["param_rank"] == 7
        assert isinstance(row["loss"], float) and row["rank"] in (1, 2)
    assert "param_loss" in res.table().splitlines()[0]
    res.to_csv(tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as fh:
        assert "param_loss" in next(csv.reader(fh))


@pytest.mark.parametrize("kw,grid,exc,match", [
    (dict(epochs=0), {"units": [2]}, ValueError, "epochs must be >= 1"),
    (dict(batch_size=2.5), {"units": [2]}, TypeError, "batch_size must be an int"),
    ({}, {"units": [2, 3], "batch_size": [8, 0]}, ValueError, "batch_size must be >= 1"),
    ({}, {"units": [2], "epochs": ["2"]}, TypeError, "epochs must be an int"),
    (dict(seed="a"), {"units": [2]}, TypeError, "seed must be an int"),
    (dict(seed=-1), {"units": [2]}, ValueError, "seed must be >= 0"),
    (dict(keep_best_model="no"), {"units": [2]}, TypeError, "keep_best_model"),
])
def test_bad_search_arguments_are_refused_before_any_training(kw, grid, exc, match):
    calls.clear()
    x, y = _data()
    with pytest.raises(exc, match=match):
        tuning.grid_search(build, grid, x, y, **kw)
    with pytest.raises(exc, match=match):
        tuning.random_search(build, grid, x, y, n_iter=2, **kw)
    assert calls == []


def test_public_names():
    assert sorted(tuning.__all__) == ["FIT_PARAMS", "SearchResults", "grid_search",
                                      "random_search"]
