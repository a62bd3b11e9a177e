"""Front doors that import on first use.

A subpackage whose modules pull in Celery or Redis names its exports in ``_HOME`` (name
-> module) and sets ``__getattr__ = lazy_exports(__name__, _HOME)``: ``from ..broker
import keys`` then never loads Celery, and ``stmpo plan`` starts without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

#: an alias naming the module itself rather than one of its attributes
MODULE = "."


def lazy_exports(package: str, home: Mapping[str, str],
                 aliases: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``home[name]`` (relative to ``package``) on
    first use and returns its attribute ``aliases.get(name, name)`` (:data:`MODULE`: the
    module itself)."""
    renamed = dict(aliases or {})

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home[name], package)
        attr = renamed.get(name, name)
        return module if attr == MODULE else getattr(module, attr)

    return __getattr__
