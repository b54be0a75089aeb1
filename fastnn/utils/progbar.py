"""Keras-style text progress bar (:class:`Progbar`) and the helpers it shares.

The bar has three display modes, chosen by ``verbose``:

``1``
    On a terminal (or in Jupyter) the bar is redrawn in place with ``"\\r"``, at
    most once every ``interval`` seconds, plus a final redraw when it completes::

         120/469 [=======>......................] - ETA: 3s - loss: 0.4123
        469/469 [==============================] - 5s 11ms/step - 9380 samples/s - loss: 0.4012

    When standard output is *not* a terminal (a log file, a CI job, pytest's
    capture), nothing is printed until the bar completes, then the final line is
    printed once: logs hold one line per bar instead of thousands of redraws.
``2``
    Only the final line, in the compact form ``469/469 - 5s - 11ms/step - loss: 0.4012``.
``0``
    Silent (values are still accumulated).

Output goes to whatever ``sys.stdout`` is at the time of writing (so pytest's
``capsys`` and ``contextlib.redirect_stdout`` see it). :func:`print_msg` is the
way for other code (callbacks) to print while a bar may be half drawn: it ends the
bar's line first, so the message does not land in the middle of the bar.
"""
from __future__ import annotations

import math
import numbers
from collections import abc
import os
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Progbar", "print_msg", "format_value", "format_logs", "format_duration"]

Values = Union[Sequence[Tuple[str, Any]], Mapping[str, Any], None]

# True while a dynamic (in-place) bar has drawn a line that is not yet terminated.
_line_open = False


def print_msg(message: str, line_break: bool = True) -> None:
    """Print ``message`` to ``sys.stdout``, first ending a half-drawn progress bar line.

    Parameters
    ----------
    message : str
        Text to print.
    line_break : bool, default True
        Append a newline.
    """
    global _line_open
    out = sys.stdout
    if out is None:  # no console (pythonw)
        return
    if _line_open:
        out.write("\n")
        _line_open = False
    out.write(message + "\n" if line_break else message)
    out.flush()


def _write_bar(text: str, leaves_line_open: bool) -> None:
    """Write bar text (which manages its own ``\\r``/``\\n``) and flush."""
    global _line_open
    out = sys.stdout
    if out is None:
        return
    out.write(text)
    out.flush()
    _line_open = leaves_line_open


def format_value(value: Any) -> str:
    """Format a metric value like Keras: ``0.4123``, or ``1.2346e-04`` when tiny.

    Numbers with ``abs(value) > 1e-3`` get 4 decimals, smaller ones (including 0)
    4 significant digits in scientific notation; arrays are averaged first;
    anything else is shown with ``str``.

    Parameters
    ----------
    value : number, 0-d/N-d array or any object

    Returns
    -------
    str
    """
    if isinstance(value, np.ndarray):
        value = float(np.mean(value)) if value.size else float("nan")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if abs(v) > 1e-3 or not math.isfinite(v):
            return f"{v:.4f}"
        return f"{v:.4e}"
    return str(value)


def format_logs(logs: Iterable[Tuple[str, Any]]) -> str:
    """``" - loss: 0.4123 - accuracy: 0.8512"`` for ``(name, value)`` pairs (or ``""``)."""
    return "".join(f" - {k}: {format_value(v)}" for k, v in logs)


def format_duration(seconds: float) -> str:
    """Wall-clock duration as ``"5s"``, ``"2:05"`` or ``"1:02:05"`` (for ETAs)."""
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _format_time_per_unit(time_per_unit: float, unit_name: str) -> str:
    """``"11ms/step"``, ``"2s/step"`` or ``"350us/step"``."""
    if time_per_unit >= 1 or time_per_unit == 0:
        return f"{time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f"{time_per_unit * 1e3:.0f}ms/{unit_name}"
    return f"{time_per_unit * 1e6:.0f}us/{unit_name}"


def _stdout_is_dynamic() -> bool:
    """Whether ``sys.stdout`` can redraw a line in place (a terminal, or Jupyter)."""
    out = sys.stdout
    try:
        if out is not None and out.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty / closed stream
        pass
    return "ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ


class Progbar:
    """Displays a progress bar (Keras ``keras.utils.Progbar`` semantics).

    Parameters
    ----------
    target : int or None
        Total number of steps expected; ``None`` if unknown (the bar then shows
        ``"    120/Unknown"`` and only completes when ``update(..., finalize=True)``
        is called).
    width : int, default 30
        Width of the bar, in characters, between the brackets.
    verbose : {0, 1, 2}, default 1
        0: silent; 1: bar (see the module docstring for terminal vs. non-terminal
        output); 2: one line when the bar completes.
    interval : float, default 0.05
        Minimum time in seconds between two redraws of the dynamic bar. Updates in
        between only accumulate values, which costs about a microsecond.
    stateful_metrics : iterable of str, optional
        Names of values that are shown as given (the latest value) instead of being
        averaged over steps. Use it for values that are already running averages.
    unit_name : str, default "step"
        Name of one step in the time-per-step display (``"11ms/step"``).
    samples : int, optional
        Keyword only. Number of samples the bar represents when it reaches
        ``target``; if given, the completed line also shows the throughput
        (``"9380 samples/s"``, pro-rated when finalized before ``target``).
    dynamic_display : bool, optional
        Keyword only. Force (``True``) or forbid (``False``) in-place redrawing;
        by default it is used when ``sys.stdout`` is a terminal or in Jupyter.

    Examples
    --------
    >>> bar = Progbar(100, verbose=2)
    >>> for step in range(1, 101):
    ...     bar.update(step, [("loss", 1.0 / step)])  # doctest: +SKIP
    """

    def __init__(self, target: Optional[int], width: int = 30, verbose: int = 1,
                 interval: float = 0.05, stateful_metrics: Optional[Iterable[str]] = None,
                 unit_name: str = "step", *, samples: Optional[int] = None,
                 dynamic_display: Optional[bool] = None) -> None:
        if target is not None:
            target = int(target)
            if target < 0:
                raise ValueError(f"target must be >= 0 or None, received {target}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, received {verbose!r}")
        self.target = target
        self.width = int(width)
        self.verbose = verbose
        self.interval = float(interval)
        self.stateful_metrics = set(stateful_metrics) if stateful_metrics else set()
        self.unit_name = unit_name
        self.samples = samples
        self._dynamic_display = (_stdout_is_dynamic() if dynamic_display is None
                                 else bool(dynamic_display))
        self._seen_so_far = 0
        # name -> [weighted sum, weight]; insertion order is the display order.
        self._values: dict = {}
        self._start = time.perf_counter()
        self._last_update = -math.inf
        self._time_after_first_step: Optional[float] = None
        self._prev_total_width = 0
        self._finalized = False

    # ------------------------------------------------------------------ public API
    def update(self, current: int, values: Values = None,
               finalize: Optional[bool] = None) -> None:
        """Move the bar to step ``current`` and record values for the last step(s).

        Parameters
        ----------
        current : int
            Index of the current step (1-based count of steps done).
        values : list of (str, value) or mapping, optional
            Values for the steps since the previous update. A name in
            ``stateful_metrics`` is displayed as given; any other name shows the
            average over steps, each update weighted by the number of steps it
            covers. On the finalizing update every value is taken as given (it is
            expected to be the epoch's final value).
        finalize : bool, optional
            Whether this is the last update; defaults to ``current >= target``
            (never, when ``target`` is None).
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if values:
            tv = type(values)
            items = (values if tv is list or tv is tuple
                     else values.items() if isinstance(values, abc.Mapping) else values)
            vals = self._values
            stateful = self.stateful_metrics
            step_weight = max(current - self._seen_so_far, 1)
            for k, v in items:
                if finalize or k in stateful or isinstance(v, str):
                    vals[k] = [v, 1]
                else:
                    acc = vals.get(k)
                    if acc is None:
                        vals[k] = [v * step_weight, step_weight]
                    else:
                        acc[0] += v * step_weight
                        acc[1] += step_weight
        self._seen_so_far = current

        now = time.perf_counter()
        if current == 1 and self._time_after_first_step is None:
            self._time_after_first_step = now
        verbose = self.verbose
        if verbose == 1:
            if not finalize and (not self._dynamic_display
                                 or now - self._last_update < self.interval):
                return
            self._render_dynamic(current, now, finalize)
            self._last_update = now
        elif verbose == 2 and finalize:
            self._render_line(current, now)
        if finalize:
            self._finalized = True

    def add(self, n: int, values: Values = None) -> None:
        """Advance the bar by ``n`` steps (``update(seen + n, values)``)."""
        self.update(self._seen_so_far + n, values)

    @property
    def seen(self) -> int:
        """Steps reported so far (the last ``current`` passed to :meth:`update`)."""
        return self._seen_so_far

    # ------------------------------------------------------------------ rendering
    def _averaged(self) -> list:
        out = []
        for k, (total, count) in self._values.items():
            if isinstance(total, np.ndarray):
                total = float(np.mean(total)) if total.size else float("nan")
            out.append((k, total / count if count > 1 else total))
        return out

    def _time_per_unit(self, current: int, now: float) -> float:
        """Seconds per step, ignoring the (often slow, warm-up) first step if possible."""
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            return (now - self._time_after_first_step) / (current - 1)
        return (now - self._start) / current

    def _throughput(self, current: int, now: float) -> str:
        if not self.samples or not current:
            return ""
        elapsed = now - self._start
        if elapsed <= 0:
            return ""
        n = self.samples
        if self.target and current < self.target:
            n = n * current / self.target
        return f" - {n / elapsed:.0f} samples/s"

    def _counter(self, current: int) -> str:
        if self.target is not None and self.target > 0:
            digits = len(str(self.target))
            return f"{current:>{digits}d}/{self.target}"
        return f"{current:7d}/Unknown"

    def _render_dynamic(self, current: int, now: float, finalize: bool) -> None:
        target = self.target
        bar = self._counter(current)
        if target is not None and target > 0:
            filled = int(self.width * min(current, target) / target)
            body = "=" * max(filled - 1, 0)
            if filled > 0:
                body += ">" if current < target else "="
            bar += " [" + body + "." * (self.width - filled) + "]"
        time_per_unit = self._time_per_unit(current, now)
        if target is not None and target > 0 and not finalize:
            info = " - ETA: " + format_duration(time_per_unit * (target - current))
        else:
            info = (f" - {now - self._start:.0f}s "
                    + _format_time_per_unit(time_per_unit, self.unit_name))
            if finalize:
                info += self._throughput(current, now)
        info += format_logs(self._averaged())
        line = bar + info
        if not self._dynamic_display:  # only reached when finalizing
            print_msg(line)
            return
        width = len(line)
        text = "\r" + line + " " * max(self._prev_total_width - width, 0)
        self._prev_total_width = width
        if finalize:
            _write_bar(text + "\n", leaves_line_open=False)
        else:
            _write_bar(text, leaves_line_open=True)

    def _render_line(self, current: int, now: float) -> None:
        time_per_unit = self._time_per_unit(current, now)
        line = (f"{self._counter(current)} - {now - self._start:.0f}s - "
                + _format_time_per_unit(time_per_unit, self.unit_name)
                + self._throughput(current, now) + format_logs(self._averaged()))
        print_msg(line)
