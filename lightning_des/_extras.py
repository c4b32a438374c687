"""Optional dependencies: a missing one fails naming the extra that installs it."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` saying ``pip install 'lightning-des[<extra>]'``.

    Example::

        >>> require("json", "tune").__name__
        'json'
    """
    try:
        return import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; this feature needs the [{extra}] extra: "
                          f"pip install 'lightning-des[{extra}]'") from err
