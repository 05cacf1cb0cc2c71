"""`ukehi-jepsen cluster up|status|logs|down`: a Ukehi cluster in containers, for a person to use.

``up`` opens a Docker cluster (the same backend a test run uses), starts a node in
every container with Ukehi's default timers, waits for a leader, and leaves it
running; it prints the addresses and a `ukehi kv` command to try. The containers
carry the label ``ukehi-jepsen.cluster=<name>``: the other commands find the
cluster by that label alone, so they work from any later shell.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli import BadArgument

DEFAULT_NAME = "default"


def _client() -> Any:
    from ..backends.docker import DockerUnavailable, connect

    try:
        return connect(timeout=30)
    except DockerUnavailable as err:
        raise BadArgument(str(err)) from None


def cluster_containers(client: Any, name: str) -> list[Any]:
    """The containers of cluster NAME, in node order (n1, n2, ..., n10)."""
    from ..backends.docker import LABEL_CLUSTER, LABEL_NODE

    found = client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"})

    def order(c: Any) -> tuple[int, str]:
        node = c.labels.get(LABEL_NODE, "")
        digits = "".join(ch for ch in node if ch.isdigit())
        return (int(digits) if digits else 0, node)

    return sorted(found, key=order)


def _address(container: Any) -> str:
    networks = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    for net in networks.values():
        if net.get("IPAddress"):
            return str(net["IPAddress"])
    return ""


def _endpoint(container: Any) -> str:
    from ..backends.docker import LABEL_PORTS

    port = (container.labels.get(LABEL_PORTS) or "7000").split(",")[0]
    addr = _address(container)
    return f"{addr}:{port}" if addr else ""


def _use_cluster_tls(containers: list[Any]) -> str | None:
    """Register the cluster's client/admin certificates (``<run>/certs``, made by `up`) for its
    endpoints, so status polls and `ukehi kv` in this process use them; the certs dir, or
    None for a cluster without one (plain TCP)."""
    from ukehi.tls import ClientTLS, register_cluster_tls

    from ..backends.docker import LABEL_WORKDIR

    for c in containers:
        workdir = c.labels.get(LABEL_WORKDIR)
        certs = Path(workdir).parent.parent / "certs" if workdir else None
        if certs is not None and (certs / "ca.pem").is_file():
            register_cluster_tls([e for e in map(_endpoint, containers) if e], ClientTLS.from_dir(str(certs)))
            return str(certs)
    return None


def _statuses(endpoints: list[str], timeout: float = 2.0) -> dict[str, dict[str, Any] | None]:
    from ukehi.client import UkehiClient

    live = [e for e in endpoints if e]
    if not live:
        return {}

    async def ask() -> dict[str, dict[str, Any] | None]:
        async with UkehiClient(live, timeout=timeout) as client:
            results = await asyncio.gather(*(client.status(e, timeout=timeout) for e in live))
        return {e: (r.value if r.ok else None) for e, r in zip(live, results)}

    return asyncio.run(ask())


def register(app: typer.Typer) -> None:
    cluster_app = typer.Typer(help="A Ukehi cluster in containers for `ukehi kv` (up, status, logs, down).",
                              no_args_is_help=True)
    name_option = typer.Option(DEFAULT_NAME, "--name", help="which cluster (several may run side by side)")

    @cluster_app.command("up")
    def up(
        nodes: Optional[str] = typer.Option(None, "--nodes", help="node names (n1,n2,n3) or how many "
                                            "(3), as in `run` (default 3)"),
        node_count: Optional[int] = typer.Option(None, "--node-count", help="number of nodes, the same "
                                                 "as --nodes N"),
        backend: str = typer.Option("docker", help="docker (the only backend that keeps a cluster up)"),
        name: str = name_option,
        results_dir: str = typer.Option("results", help="the node data and logs go to "
                                                        "<results-dir>/cluster-<name>/<timestamp>/nodes/"),
        subnet: Optional[str] = typer.Option(None, help="IPv4 subnet for the cluster network (default: a free "
                                                        "/24 of 10.214.0.0/16)"),
        image: Optional[str] = typer.Option(None, help="node image (default ukehi-node:latest)"),
        shards: Optional[int] = typer.Option(None, "--shards", help="split the keys into S shards, each its own "
                                             "Raft group placed by consistent hashing (default: unsharded)"),
        replication_factor: Optional[int] = typer.Option(None, "--replication-factor", help="members of each "
                                                         "shard's group (default 3, or the node count if fewer)"),
    ) -> None:
        """Start NODES containers with a Ukehi node each, wait for a leader (a leader in every
        shard with --shards), leave them running."""
        from ..backends.base import BackendError
        from ..backends.docker import DockerCluster
        from ..db import DBError, UkehiDB
        from ..sharding import shard_options
        from ..spec import SpecError
        from ..store import check_writable, timestamp
        from .run import node_names

        if backend != "docker":
            raise BadArgument(f"--backend {backend}: `cluster up` runs clusters in containers only "
                              "(--backend docker); for local processes use `ukehi-jepsen run --leave-running`")
        try:  # --nodes, --node-count, --shards and --replication-factor mean what they mean for `run`
            names = node_names(nodes, node_count, most=50)
            sharding = shard_options(shards, replication_factor, len(names), "register", ())
        except SpecError as err:
            raise BadArgument(str(err)) from None
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise BadArgument(f"--name {name!r}: use letters, digits, '-' and '_'")
        client = _client()
        existing = cluster_containers(client, name)
        if existing:
            raise BadArgument(f"cluster {name} is already up ({', '.join(c.name for c in existing)}): "
                              f"`ukehi-jepsen cluster down --name {name}` first, or choose another --name")
        root = check_writable(results_dir)
        where = (Path(root) / f"cluster-{name}" / timestamp()).resolve()
        cluster = DockerCluster(names, results_dir=where, image=image, subnet=subnet,
                                kind="cluster", cluster_name=name, client=client)
        try:
            cluster.open()
            # Ukehi's own timers (None = the node's default), not the fast ones of a test run.
            db = UkehiDB(cluster, node_options={"election_timeout": None, "heartbeat": None, **sharding})
            db.start_all()
            leader = asyncio.run(db.wait_for_leader(timeout=60.0))
        except (BackendError, DBError) as err:
            cluster.close()
            print(f"ukehi-jepsen cluster up: {err}", file=sys.stderr)
            raise typer.Exit(1)
        except BaseException:
            cluster.close()  # Ctrl-C or a crash: never leave half a cluster behind
            raise
        cluster.leave_running()
        cluster.close()
        endpoints = db.addresses()
        print(f"cluster {name} is up: {len(names)} node(s) on Docker network {cluster.network_name} "
              f"({cluster.subnet}), leader {leader}")
        for node_name, handle in cluster.nodes.items():
            print(f"  {node_name:<4} {handle.address}:{handle.ports[0]:<6} container "
                  f"{getattr(handle, 'container_name', '')}")
        joined = ",".join(endpoints)
        if sharding:
            from ukehi.shardmap import ShardMap

            smap = ShardMap.initial(names, sharding["shards"], sharding["replication_factor"])
            print(f"shard map: epoch {smap.epoch}, {smap.shards} shards, replication factor "
                  f"{smap.replication_factor}; shards per node: "
                  + ", ".join(f"{n} {len(smap.shards_of(n))}" for n in names))
        print(f"data and logs: {where / 'nodes'}")
        # The nodes talk mutual TLS with a CA made for this cluster; a client needs its certificates.
        print(f"certificates: {db.certs_dir} (client.pem, admin.pem, ca.pem)")
        print("try:")
        print(f"  export UKEHI_TLS_DIR={db.certs_dir}")
        print(f"  ukehi kv put --cluster {joined} greeting hello")
        print(f"  ukehi kv get --cluster {joined} greeting")
        suffix = "" if name == DEFAULT_NAME else f" --name {name}"
        print(f"then: ukehi-jepsen cluster status{suffix} | cluster logs n1{suffix} | cluster down{suffix}")

    @cluster_app.command("status")
    def status(name: str = name_option) -> None:
        """Each node's container state, address and Raft role."""
        containers = cluster_containers(_client(), name)
        if not containers:
            print(f"no cluster named {name} is up; start one with `ukehi-jepsen cluster up`", file=sys.stderr)
            raise typer.Exit(1)
        from ..backends.docker import LABEL_NODE

        endpoints = [_endpoint(c) if c.status == "running" else "" for c in containers]
        _use_cluster_tls(containers)
        answers = _statuses(endpoints)
        print(f"{'node':<6} {'container':<22} {'state':<9} {'address':<20} {'role':<10} {'term':>5}  leader")
        for c, ep in zip(containers, endpoints):
            st = answers.get(ep) if ep else None
            role = st.get("role", "?") if st else "down"
            if st and isinstance(st.get("shards"), dict):  # sharded: its groups, and how many it leads
                led = sum(1 for g in st["shards"].values() if g.get("role") == "leader")
                role = f"leads {led}/{len(st['shards'])}"
            term = str(st.get("term", "")) if st else ""
            leader = str(st.get("leader") or "") if st else ""
            print(f"{c.labels.get(LABEL_NODE, '?'):<6} {c.name:<22} {c.status:<9} {ep or '-':<20} "
                  f"{role:<10} {term:>5}  {leader}")
        print(f"--cluster {','.join(e for e in endpoints if e)}")

    @cluster_app.command("logs")
    def logs(
        node: str = typer.Argument(..., help="node name, e.g. n1"),
        name: str = name_option,
        lines: int = typer.Option(50, help="how many of the last lines (0 = all)"),
    ) -> None:
        """The last lines of NODE's log (its node.log on the bind mount)."""
        from ..backends.docker import LABEL_NODE, LABEL_WORKDIR

        containers = cluster_containers(_client(), name)
        match = [c for c in containers if c.labels.get(LABEL_NODE) == node]
        if not match:
            known = ", ".join(c.labels.get(LABEL_NODE, "?") for c in containers) or "none: is the cluster up?"
            raise BadArgument(f"no node {node!r} in cluster {name}; nodes: {known}")
        c = match[0]
        log = Path(c.labels.get(LABEL_WORKDIR, "")) / "node.log"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            # The harness and the engine may not share a file system: ask the container.
            rc, out = c.exec_run(["sh", "-c", f"cat '{log}'"])
            if rc != 0:
                print(f"no log for {node} yet ({log}): {out.decode(errors='replace').strip()}", file=sys.stderr)
                raise typer.Exit(1)
            text = out.decode(errors="replace")
        selected = text.splitlines()[-lines:] if lines > 0 else text.splitlines()
        for line in selected:
            print(line)

    @cluster_app.command("down")
    def down(name: str = name_option) -> None:
        """Remove the cluster's containers and network (its data and logs stay on disk)."""
        from ..backends.docker import LABEL_RUN, LABEL_WORKDIR, remove_run

        client = _client()
        containers = cluster_containers(client, name)
        if not containers:
            print(f"no cluster named {name} is up; nothing to remove")
            return
        run_ids = sorted({c.labels.get(LABEL_RUN, "") for c in containers} - {""})
        workdirs = sorted({str(Path(c.labels[LABEL_WORKDIR]).parent) for c in containers if LABEL_WORKDIR in c.labels})
        problems: list[str] = []
        for run_id in run_ids:
            problems += remove_run(client, run_id)
        if problems:
            print("ukehi-jepsen cluster down: " + "; ".join(problems), file=sys.stderr)
            raise typer.Exit(1)
        print(f"cluster {name} removed ({len(containers)} container(s) and network ukj-{', ukj-'.join(run_ids)})")
        for w in workdirs:
            print(f"data and logs kept in {w}")

    app.add_typer(cluster_app, name="cluster")
