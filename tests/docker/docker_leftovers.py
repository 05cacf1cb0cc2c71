"""What the harness's Docker objects look like to a test: those labelled with this test session.

The engine may be shared with other sessions (another CI job, another person's tests):
a test session sets UKEHI_JEPSEN_SESSION (see conftest.py), every object the harness makes
then carries it, and the tests look at, and clean up, only those.
"""

from __future__ import annotations

import os
from typing import Any

from harness.backends.docker import LABEL_RUN, LABEL_SESSION, SESSION_ENV


def session_filter() -> dict[str, list[str]]:
    session = os.environ.get(SESSION_ENV)
    assert session, f"{SESSION_ENV} is not set: the docker tests' conftest sets it for the session"
    return {"label": [LABEL_RUN, f"{LABEL_SESSION}={session}"]}


def labelled(client: Any) -> dict[str, set[str]]:
    """Ids of every container, network and volume this test session's harness made."""
    flt = session_filter()
    return {"containers": {c.id for c in client.containers.list(all=True, filters=flt)},
            "networks": {n.id for n in client.networks.list(filters=flt)},
            "volumes": {v.id for v in client.volumes.list(filters=flt)}}
