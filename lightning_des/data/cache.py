"""Where prepared data lives: ``$LIGHTNING_DES_DATA`` or ``~/.cache/lightning_des``."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LIGHTNING_DES_DATA`` or ``~/.cache/lightning_des``."""
    return Path(os.environ.get("LIGHTNING_DES_DATA", Path.home() / ".cache" / "lightning_des"))
