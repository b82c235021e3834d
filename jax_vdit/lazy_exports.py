"""Names a package exports but imports only on first use (PEP 562), so that importing the package stays light:
``import jax_vdit.cli`` and the VAE's compile-process launcher then run without importing JAX."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for the package named ``package`` whose module globals are ``namespace``:
    ``exports`` maps each exported name to the module that defines it; other names are tried as submodules. A
    resolved name is kept in ``namespace``, so each is imported once."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            try:  # a submodule not imported yet (``jax_vdit.sampling``)
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
