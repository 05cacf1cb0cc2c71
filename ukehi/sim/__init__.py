"""Deterministic simulation of a Ukehi cluster: the real node code in virtual time.

- :mod:`ukehi.sim.loop`: an asyncio event loop whose clock jumps to the next timer;
- :mod:`ukehi.sim.fs`: an in-memory file system with crash semantics (lost un-fsynced
  writes, torn tails, damage), under the real storage code via ``ukehi.storage.vfs``;
- :mod:`ukehi.sim.world`: 3-7 real ``UkehiNode`` objects on a simulated network, disk and
  clocks, with the faults the nemeses inject.

Clients, histories and checkers are the harness's (``harness.sim``).
"""
