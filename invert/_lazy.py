"""Lazy re-exports for package ``__init__`` modules (PEP 562).

``import invert`` (and ``import theory``) must not import torch: ``crelu --help`` only
needs the parsers. A package lists what it re-exports, by submodule; each name is
imported the first time it is looked up (``invert.reconstruct``, ``from invert import
Net``) and then kept in the package's namespace, so later look-ups cost nothing.
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["attach"]


def attach(package: str, namespace: dict, exports: dict[str, list[str]]):
    """``(__getattr__, __dir__, __all__)`` for a package re-exporting ``exports`` lazily.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    namespace : dict
        The package's ``globals()``; looked-up names are stored there.
    exports : dict
        Relative submodule (``".nn"``) -> the names it provides, in ``__all__`` order.

    Examples
    --------
    >>> import types
    >>> demo = types.ModuleType("demo")
    >>> getter, lister, names = attach("json", vars(demo), {".decoder": ["JSONDecodeError"]})
    >>> getter("JSONDecodeError").__name__, names
    ('JSONDecodeError', ['JSONDecodeError'])
    >>> "JSONDecodeError" in vars(demo)  # kept after the first look-up
    True
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            # a subpackage (``invert.train``) is an attribute once imported, as before
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__, list(where)
