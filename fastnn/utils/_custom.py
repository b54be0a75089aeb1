"""The user's own objects by name while a model is rebuilt from its file: ``load_model``'s
``custom_objects``, seen by the activation, initializer and regularizer lookups of the
layers' configs (a context variable: each thread and task has its own)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Optional

_CUSTOM: contextvars.ContextVar = contextvars.ContextVar("fastnn_custom_objects",
                                                         default=None)


@contextlib.contextmanager
def custom_objects_scope(custom_objects: Optional[dict]):
    """Within the ``with``, :func:`custom_object` finds ``custom_objects[name]``."""
    token = _CUSTOM.set(dict(custom_objects or {}))
    try:
        yield
    finally:
        _CUSTOM.reset(token)


def custom_object(name: Any) -> Any:
    """The user's object called ``name`` in the current scope, or None."""
    return (_CUSTOM.get() or {}).get(name) if isinstance(name, str) else None


def function_config(fn) -> dict:
    """How a config names the user's function ``fn`` (Keras 3's form, read back through
    :func:`custom_object`)."""
    return {"class_name": "function", "config": getattr(fn, "__name__", repr(fn))}


def from_custom(config: dict, what: str) -> Any:
    """The user's object a serialized config names, or None when it names none of theirs:
    Keras's ``{"class_name": "function", "config": name}`` gives the function
    ``custom_objects[name]`` (ValueError if it is missing); ``{"class_name": c, "config":
    {...}}`` with ``c`` among the custom objects gives ``c.from_config(config)`` for a
    class (or ``c(**config)``), ``c`` itself for an instance. ``what`` ("initializer",
    ...) names the kind in messages."""
    class_name = config.get("class_name")
    if class_name == "function":
        name = config.get("config")
        found = custom_object(name)
        if found is None:
            raise ValueError(f"Unknown {what} {name!r}, a function of your own not in "
                             f"custom_objects")
        return found
    found = custom_object(class_name)
    if found is None:
        return None
    if not isinstance(found, type):
        return found
    cfg = dict(config.get("config") or {})
    return found.from_config(cfg) if hasattr(found, "from_config") else found(**cfg)
