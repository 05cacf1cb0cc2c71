"""Stand-ins for driving one node's recovery and driver in-process, with no sockets."""

from __future__ import annotations

PEERS = {"n1": ("127.0.0.1", 1), "n2": ("127.0.0.1", 2), "n3": ("127.0.0.1", 3)}


class NoNetwork:
    """Recovery only asks the network to keep links to the members: nothing is sent here."""

    def ensure(self, peer: str, address: tuple[str, int]) -> None:
        pass

    def linked_peers(self) -> list[str]:
        return []


def log_events(text: str) -> list[str]:
    """The ``event=`` names of a node log, in order."""
    return [part.split("=", 1)[1] for line in text.splitlines() for part in line.split() if part.startswith("event=")]
