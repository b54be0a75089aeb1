"""Drop-in replacements for the modules of other from-scratch deep-learning codes.

:mod:`fastnn.compat.dlfs`
    ``common/util.py`` (``im2col``, ``col2im``), ``common/layers.py`` and
    ``common/optimizer.py`` of "Deep Learning from Scratch" (Koki Saitou, O'Reilly Japan),
    running on :mod:`fastnn.ops`.
"""
from __future__ import annotations

__all__ = ["dlfs"]


def __getattr__(name):
    # Imported on first use so that `import fastnn.compat` stays light.
    if name == "dlfs":
        import importlib

        return importlib.import_module(f"{__name__}.dlfs")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
