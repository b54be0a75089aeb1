"""Hyper-parameter search over a model-building function: grid and random search.

``build_fn(**params)`` returns a compiled model. Each trial trains it on the training data,
scores it on validation data, and the search returns a :class:`SearchResults` table::

    def build(units, learning_rate):
        model = Sequential([Flatten(input_shape=(28, 28)), Dense(units, activation="relu"),
                            Dense(10, activation="softmax")])
        model.compile(Adam(learning_rate), "sparse_categorical_crossentropy", ["accuracy"])
        return model

    results = grid_search(build, {"units": [64, 128], "learning_rate": [1e-3, 3e-4]},
                          x, y, validation_split=0.2, epochs=3)
    print(results.table())
    results.best_params   # {'units': 128, 'learning_rate': 0.001}

Parameters named ``batch_size`` or ``epochs`` go to ``fit`` instead of ``build_fn``.
"""
from __future__ import annotations

import csv
import itertools
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .callbacks import infer_mode
from .utils import get_rng, set_random_seed
from .utils._args import check_bool, check_int, check_path
from .utils._files import atomic_write_text

__all__ = ["grid_search", "random_search", "SearchResults", "FIT_PARAMS"]

FIT_PARAMS = ("batch_size", "epochs")


def _direction(objective: str, mode: str) -> str:
    if not isinstance(objective, str):
        raise TypeError(f"objective must be the name of a logged value (a str such as "
                        f"'val_loss'), received objective={objective!r}")
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', received {mode!r}")
    if mode != "auto":
        return mode
    return infer_mode(objective, "objective")


class SearchResults:
    """The trials of a search, best first.

    Attributes
    ----------
    trials : list of dict
        One per trial: ``params`` (dict), ``score`` (the objective), ``metrics`` (the final
        epoch's logs), ``seconds`` (training time), sorted best first.
    objective : str
    mode : {"min", "max"}
    best_model : Sequential or None
        The trained model of the best trial (when ``keep_best_model`` was True).
    """

    def __init__(self, trials: List[dict], objective: str, mode: str, best_model=None):
        self.trials = sorted(trials, key=lambda t: _rank(t["score"], mode))
        self.objective = objective
        self.mode = mode
        self.best_model = best_model

    @property
    def best_params(self) -> Dict[str, Any]:
        return dict(self.trials[0]["params"]) if self.trials else {}

    @property
    def best_score(self) -> float:
        return self.trials[0]["score"] if self.trials else math.nan

    def rows(self) -> List[Dict[str, Any]]:
        """One flat dict per trial: rank, the parameters, every logged metric, seconds. A
        parameter named like one of the other columns (``loss``, ``rank``...) is listed as
        ``param_<name>``, so neither hides the other."""
        out = []
        for rank, t in enumerate(self.trials, 1):
            row = {"rank": rank}
            taken = {"rank", "seconds", *t["metrics"]}
            row.update({("param_" + k if k in taken else k): v for k, v in t["params"].items()})
            row.update({k: v for k, v in t["metrics"].items()})
            row["seconds"] = round(t["seconds"], 3)
            out.append(row)
        return out

    def table(self) -> str:
        """The results as an aligned text table, best first."""
        rows = self.rows()
        if not rows:
            return "(no trials)"
        cols = list(dict.fromkeys(k for r in rows for k in r))
        cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def to_csv(self, path) -> None:
        """Write :meth:`rows` to a CSV file (atomically: utils._files.atomic_write_text)."""
        rows = self.rows()
        cols = list(dict.fromkeys(k for r in rows for k in r))

        def write(fh) -> None:
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_text(check_path(path, "path"), write, name="path")

    def __repr__(self) -> str:
        return (f"SearchResults({len(self.trials)} trials, best {self.objective}="
                f"{self.best_score:.4g} with {self.best_params})")


def _rank(score: float, mode: str) -> tuple:
    """A trial's sort key, best first: NaN scores last, ties in trial order (the sort is
    stable, and the search keeps the first of equal trials' models)."""
    if math.isnan(score):
        return (1, 0.0)
    return (0, -score if mode == "max" else score)


def _check_seed(seed) -> Optional[int]:
    return None if seed is None else check_int(seed, "seed", low=0)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _choices(v) -> Optional[list]:
    """``v``'s values as a list when it is a collection of choices (a list, tuple, range
    or 1-D NumPy array; NumPy scalars become Python numbers), else None."""
    if isinstance(v, np.ndarray):
        return [a.item() for a in v.ravel()] if v.ndim == 1 else None
    if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        return [a.item() if isinstance(a, np.generic) else a for a in v]
    return None


# fit's arguments the search sets itself (fit_kwargs may not give them)
_SEARCH_FIT_ARGS = ("x", "y", "validation_data", "validation_split", "verbose") + FIT_PARAMS


def _run(build_fn, candidates, x, y, validation_data, validation_split, epochs, batch_size,
         objective, mode, verbose, seed, keep_best_model, fit_kwargs) -> SearchResults:
    clash = sorted(set(fit_kwargs or {}) & set(_SEARCH_FIT_ARGS))
    if clash:
        raise ValueError(f"fit_kwargs must not set {clash}: the search sets them (give "
                         f"epochs, batch_size, validation_data, validation_split and "
                         f"verbose to the search itself)")
    if not callable(build_fn):
        raise TypeError(f"build_fn must be a callable returning a compiled model, received "
                        f"{build_fn!r}")
    if validation_data is None and not validation_split:
        raise ValueError("a search needs validation data: give validation_data=(x_val, y_val) "
                         "or validation_split > 0")
    mode = _direction(objective, mode)
    # everything that can be checked before the first trial trains
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    keep_best_model = check_bool(keep_best_model, "keep_best_model")
    for params in candidates:
        for k in FIT_PARAMS:
            if k in params:
                check_int(params[k], k)
    trials, best_model, best = [], None, None
    for i, params in enumerate(candidates):
        build_params = {k: v for k, v in params.items() if k not in FIT_PARAMS}
        fit_params = {"epochs": epochs, "batch_size": batch_size}
        fit_params.update({k: v for k, v in params.items() if k in FIT_PARAMS})
        if seed is not None:
            set_random_seed(seed + i)
        model = build_fn(**build_params)
        if getattr(model, "optimizer", None) is None:
            raise ValueError("build_fn must return a compiled model (call model.compile)")
        t0 = time.perf_counter()
        hist = model.fit(x, y, validation_data=validation_data,
                         validation_split=0.0 if validation_data is not None else validation_split,
                         verbose=0, **fit_params, **(fit_kwargs or {}))
        seconds = time.perf_counter() - t0
        logs = {k: v[-1] for k, v in hist.history.items() if v}
        if objective not in logs:
            raise ValueError(f"objective {objective!r} is not among the logged values "
                             f"{sorted(logs)}")
        score = float(logs[objective])
        trials.append({"params": dict(params), "score": score, "metrics": logs,
                       "seconds": seconds})
        if verbose:
            print(f"trial {i + 1}: {params} -> {objective}={score:.4f} ({seconds:.1f}s)")
        if best is None or _rank(score, mode) < best:   # the ranking's own order
            best = _rank(score, mode)
            if keep_best_model:
                best_model = model
    return SearchResults(trials, objective, mode, best_model)


def grid_search(build_fn: Callable[..., Any], param_grid: Mapping[str, Sequence], x, y, *,
                validation_data=None, validation_split: float = 0.2, epochs: int = 1,
                batch_size: int = 32, objective: str = "val_loss", mode: str = "auto",
                verbose: int = 0, seed: Optional[int] = 0, keep_best_model: bool = True,
                fit_kwargs: Optional[dict] = None) -> SearchResults:
    """Train one model per combination of ``param_grid`` and rank them on ``objective``.

    Parameters
    ----------
    build_fn : callable ``(**params) -> compiled Sequential``
    param_grid : dict name -> list of values (a list, tuple, range or 1-D NumPy array)
    x, y : training data
    validation_data, validation_split : as for ``fit`` (one of them is required)
    epochs, batch_size : fit defaults (a grid entry of the same name overrides them)
    objective : a logged key, e.g. "val_loss" or "val_accuracy"
    mode : "auto" (max for accuracy-like names, else min), "min" or "max"
    seed : int or None
        Trial ``i`` runs after ``set_random_seed(seed + i)``, so searches are repeatable;
        None leaves fastnn's global generator as it goes.

    Returns
    -------
    SearchResults
    """
    seed = _check_seed(seed)
    if not isinstance(param_grid, Mapping) or not param_grid:
        raise ValueError(f"param_grid must be a non-empty dict of lists, received {param_grid!r}")
    values = []
    for k, v in param_grid.items():
        choices = _choices(v)
        if not choices:
            raise ValueError(f"param_grid[{k!r}] must be a non-empty list of values, received "
                             f"{v!r}")
        values.append(choices)
    keys = list(param_grid)
    candidates = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    return _run(build_fn, candidates, x, y, validation_data, validation_split, epochs,
                batch_size, objective, mode, verbose, seed, keep_best_model, fit_kwargs)


def random_search(build_fn: Callable[..., Any], param_distributions: Mapping[str, Any], x, y,
                  *, n_iter: int = 10, validation_data=None, validation_split: float = 0.2,
                  epochs: int = 1, batch_size: int = 32, objective: str = "val_loss",
                  mode: str = "auto", verbose: int = 0, seed: Optional[int] = 0,
                  keep_best_model: bool = True, fit_kwargs: Optional[dict] = None) -> SearchResults:
    """Train ``n_iter`` models with parameters drawn from ``param_distributions``.

    Each distribution is a list, tuple, range or 1-D NumPy array (a uniform choice), an
    object with ``rvs`` (a ``scipy.stats`` distribution, drawn with the search's
    generator), a callable ``rng -> value`` (e.g. ``lambda rng: 10 ** rng.uniform(-4,
    -2)`` for a log-uniform learning rate) or a fixed value. They are drawn from a
    generator seeded with ``seed``, or with ``seed=None`` from fastnn's global one (so
    :func:`fastnn.utils.set_random_seed` makes the search repeatable). Other arguments as
    for :func:`grid_search`.
    """
    n_iter = check_int(n_iter, "n_iter")
    seed = _check_seed(seed)
    if not isinstance(param_distributions, Mapping) or not param_distributions:
        raise ValueError("param_distributions must be a non-empty dict")
    rng = get_rng(seed)   # seed None: fastnn's global generator (set_random_seed)
    candidates = []
    for _ in range(n_iter):
        params = {}
        for k, dist in param_distributions.items():
            choices = _choices(dist)
            if hasattr(dist, "rvs"):          # a scipy.stats distribution
                v = dist.rvs(random_state=rng)
                params[k] = v.item() if isinstance(v, np.generic) else v
            elif callable(dist):
                params[k] = dist(rng)
            elif choices is not None:
                if len(choices) == 0:
                    raise ValueError(f"param_distributions[{k!r}] is an empty list")
                params[k] = choices[int(rng.integers(len(choices)))]
            else:
                params[k] = dist
        candidates.append(params)
    return _run(build_fn, candidates, x, y, validation_data, validation_split, epochs,
                batch_size, objective, mode, verbose, seed, keep_best_model, fit_kwargs)
