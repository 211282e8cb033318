"""Lazy package attributes (PEP 562): a package's public names, and its submodules, load when first used."""

from __future__ import annotations

import importlib
import importlib.util
import sys


def lazy_attributes(package: str, modules: dict[str, tuple[str, ...]], public: list[str]):
    """``(__getattr__, __dir__)`` for ``package``: each name in ``modules[module]`` (``module`` relative to the
    package) is imported from that module when first asked for, then kept in the package. Any other name that is a
    submodule of the package imports it, so ``import hf_sentinel`` then ``hf_sentinel.evaluation.load_target`` works
    as it did when the package imported its submodules eagerly. ``dir()`` lists ``public`` too."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
            vars(sys.modules[package])[name] = value
            return value
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__
