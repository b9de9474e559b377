"""Lazy package exports: `from course.torch import GPT` loads course.torch.model (and torch)
only when the name is asked for, so importing the package itself stays framework-free."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` serving `exports` (name -> submodule of `package`)."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
