"""Backends turn a node name into a handle with a small set of verbs (start, kill, pause, ...).

- :mod:`harness.backends.base`: the contract (``NodeHandle``, ``Cluster``, errors);
- :mod:`harness.backends.local`: processes on this machine, one network namespace
  each when root (``LocalCluster``);
- :func:`cleanup_leftovers` removes what earlier local runs left behind.
"""

from harness.backends.base import BackendError, Cluster, Direction, NeedsRootError, NodeHandle
from harness.backends.local import LocalCluster, LocalNode, new_run_id
from harness.backends.runstate import cleanup_leftovers

__all__ = ["BackendError", "Cluster", "Direction", "LocalCluster", "LocalNode", "NeedsRootError",
           "NodeHandle", "cleanup_leftovers", "new_run_id"]
