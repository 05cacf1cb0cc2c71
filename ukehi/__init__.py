"""Ukehi: a Raft-replicated key-value node.

This package is the system under test. It never imports the harness
(`harness`, `nemeses`, `workloads`, `checkers`).
"""

__version__ = "0.1.0"
