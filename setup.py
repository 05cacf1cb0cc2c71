"""Build hook for the optional C extensions; everything else is in pyproject.toml.

``checkers._fastread`` (checkers/_fastread.c, plain CPython C API) reads JSONL histories
5x to 7x faster than the pure-Python reader (issue 17; ``bench/checker.py --reading-only``).
``checkers._fastwgl`` (checkers/_fastwgl.c) runs the linearizability search loop of
``checkers.wgl`` (issue 17; ``bench/checker.py --vs-go``).
Both are optional: where no C compiler or Python headers exist, ``pip install`` warns and
goes on, and ``checkers.history`` and ``checkers.wgl`` run in Python with the same results
(``UKEHI_PURE_PYTHON=1`` forces that).

The node image's wheel (harness/image.py) is built from a copy of the sources without this
file, so it stays pure Python: the nodes never read histories.
"""

import os

from setuptools import Extension, setup

# UKEHI_PURE_PYTHON=1 at build time leaves the extensions out: the SSH backend's node wheel
# (harness/backends/ssh.py) is built that way, so it stays pure Python (py3-none-any) and
# needs no compiler (the nodes never read histories).
_PURE = os.environ.get("UKEHI_PURE_PYTHON", "") not in ("", "0")

setup(ext_modules=[] if _PURE else [
    Extension("checkers._fastread", ["checkers/_fastread.c"], optional=True),
    Extension("checkers._fastwgl", ["checkers/_fastwgl.c"], optional=True),
])
