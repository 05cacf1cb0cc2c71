"""What the harness's Docker objects look like to a test: everything that carries the run label."""

from __future__ import annotations

from typing import Any

LABEL_RUN = "ukehi-jepsen.run"


def labelled(client: Any) -> dict[str, set[str]]:
    """Ids of every container, network and volume that carries the harness's run label."""
    flt = {"label": LABEL_RUN}
    return {"containers": {c.id for c in client.containers.list(all=True, filters=flt)},
            "networks": {n.id for n in client.networks.list(filters=flt)},
            "volumes": {v.id for v in client.volumes.list(filters=flt)}}
