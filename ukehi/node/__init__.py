"""The Ukehi node, split by job (moved here from ``ukehi/node.py``):

- ``driver``: the Ready loop (persist -> send -> apply -> answer), written once over the
  I/O interfaces, used by the asyncio node and by the simulator (``ukehi.sim``);
- ``inputs``: the typed inputs the Ready loop takes;
- ``io``: the interfaces (clock/timers, network, disk, listener) and the real ones;
- ``recovery``: data dir replay under the CorruptionPolicy, building the core;
- ``api``: client requests, reads, writes, peer frames, status;
- ``admin``: membership changes, leadership transfer, manual snapshots;
- ``server``: the asyncio node process (lifecycle, timers, fail-stop, shutdown).
"""

from .driver import ADDRESS_KEY_PREFIX, GROUP_ID, Driver
from .io import NodeIO
from .server import (
    EXIT_INVARIANT_VIOLATED,
    EXIT_REFUSE_START,
    EXIT_START_FAILED,
    UkehiNode,
    raft_config,
    run_node,
)

__all__ = ["UkehiNode", "run_node", "raft_config", "Driver", "NodeIO", "ADDRESS_KEY_PREFIX", "GROUP_ID",
           "EXIT_REFUSE_START", "EXIT_START_FAILED", "EXIT_INVARIANT_VIOLATED"]
