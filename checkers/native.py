"""The optional C extensions (checkers/_fastread.c, checkers/_fastwgl.c).

setup.py builds them where a C compiler and Python's headers exist; without one, or with
``UKEHI_PURE_PYTHON`` set (to anything but "" or "0"), the pure-Python paths run with the
same results. The SSH backend's node wheel is built with that variable set, so it stays
pure Python.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

PURE_PYTHON_ENV = "UKEHI_PURE_PYTHON"


def extension(module: str) -> Any:
    """The extension module ``module`` (e.g. ``checkers._fastread``), or None when it is not
    built (no compiler at install time, or built for another Python) or ``UKEHI_PURE_PYTHON``
    is set. Callers look once and keep the answer."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
