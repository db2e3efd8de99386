"""How every registry finds its members: each public module of its package registers one when imported."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_members(package: str, path) -> list[ModuleType]:
    """Import every module of ``package`` (its ``__path__``) whose name has no leading ``_``, sorted by
    name (a stable registration order); private helpers are imported by the members that use them."""
    found = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in found]
