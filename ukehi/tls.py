"""Mutual TLS for every Ukehi connection, with the standard library's `ssl` only.

A cluster has one CA (`ukehi certs init DIR`). Every certificate it issues (`ukehi certs
issue`) names one principal:

* the **common name** (CN) is the principal's name: for a node, its node id (`n1`);
* the **organizational unit** (OU) is its role: `node`, `client` or `admin`.

What a role may do on a node's port:

| role   | Raft traffic (hello as peer, raft frames) | KV ops and status | admin verbs |
| ------ | ----------------------------------------- | ----------------- | ----------- |
| node   | yes, as the node its CN names             | status only       | no          |
| client | no                                        | yes               | no          |
| admin  | no                                        | yes               | yes         |

Admin verbs are `wire.ADMIN_REQUESTS` (membership, leadership transfer, snapshot; any
unsafe knob added to the wire protocol goes there too). A Raft message whose `src` is not
the CN of the connection's certificate is dropped and counted (`forged_peer_messages` in
`kv status`). Both sides check the other: a node accepts only certificates signed by the
cluster CA (expired or foreign ones fail the handshake), a peer link checks that the node
it reached presents a `node` certificate with the id it meant to reach, and a client checks
that it reached *a* node of the cluster. Host names and addresses are not checked: the
identity is the certificate's node id (node certificates also carry it as a DNS SAN).

Files: the CA is `ca.pem` (+ `ca.key`, which stays where it was made); a principal is
`<name>.pem` + `<name>.key`. A node's `--tls-dir` holds `ca.pem` and its own `node.pem` /
`node.key` (or `<id>.pem` / `<id>.key`); a client's `--tls-dir` (or `UKEHI_TLS_DIR`) holds
`ca.pem` and `client.pem`/`client.key` and/or `admin.pem`/`admin.key`: admin verbs go over
the admin certificate, everything else over the client one.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = [
    "ROLES",
    "ROLE_NODE",
    "ROLE_CLIENT",
    "ROLE_ADMIN",
    "TLSError",
    "Identity",
    "NodeTLS",
    "ClientTLS",
    "identity_of",
    "server_context",
    "client_context",
    "register_cluster_tls",
    "forget_cluster_tls",
    "client_tls_for",
    "ENV_TLS_DIR",
]

ROLE_NODE = "node"
ROLE_CLIENT = "client"
ROLE_ADMIN = "admin"
ROLES = (ROLE_NODE, ROLE_CLIENT, ROLE_ADMIN)
ENV_TLS_DIR = "UKEHI_TLS_DIR"


class TLSError(ValueError):
    """TLS files missing or unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class Identity:
    """Who is on the other end of a connection, as its certificate says."""

    name: str
    role: str

    def __str__(self) -> str:
        return f"{self.role} {self.name!r}"


def identity_of(peercert: Mapping[str, Any] | None) -> Identity | None:
    """The (CN, OU) of a verified peer certificate (`SSLObject.getpeercert()`), or None."""
    if not peercert:
        return None
    cn = ou = None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and cn is None:
                cn = value
            elif key == "organizationalUnitName" and ou is None:
                ou = value
    if not cn or ou not in ROLES:
        return None
    return Identity(cn, ou)


def _need(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise TLSError(f"{what} {path} does not exist; make it with `ukehi certs init DIR` and "
                       "`ukehi certs issue DIR ...`, or run with --insecure (plain TCP)")
    return path


def _base_context(purpose_server: bool, ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose_server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The identity is the certificate's node id, not a host name (see the module doc).
    ctx.check_hostname = False
    try:
        ctx.load_verify_locations(cafile=_need(ca, "CA certificate"))
    except ssl.SSLError as e:
        raise TLSError(f"CA certificate {ca} cannot be loaded: {e}") from None
    try:
        ctx.load_cert_chain(_need(cert, "certificate"), _need(key, "private key"))
    except ssl.SSLError as e:
        raise TLSError(f"certificate {cert} and key {key} cannot be loaded together: {e}") from None
    return ctx


def server_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """The node's listening side: requires a client certificate signed by the cluster CA."""
    return _base_context(True, ca, cert, key)


def client_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """An outgoing connection (a peer link or a client) presenting `cert`."""
    return _base_context(False, ca, cert, key)


def _cert_identity(cert_path: str) -> Identity | None | bool:
    """Read a PEM certificate's CN/OU with the stdlib only (CPython's certificate decoder);
    False when this Python has no such decoder (the check is then left to the peers)."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return False
    try:
        return identity_of(decode(cert_path))
    except (OSError, ssl.SSLError, ValueError):
        return None


@dataclass(frozen=True)
class NodeTLS:
    """A node's TLS material: its server context and the context of its peer links."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    identity: Identity
    files: tuple[str, str, str]  # ca, cert, key

    @classmethod
    def load(cls, node_id: str, ca: str, cert: str, key: str) -> "NodeTLS":
        ident = _cert_identity(_need(cert, "certificate"))
        if ident is False:
            ident = Identity(node_id, ROLE_NODE)
        if ident is None:
            raise TLSError(f"certificate {cert} names no Ukehi principal (CN = node id, OU = node)")
        assert isinstance(ident, Identity)
        if ident.role != ROLE_NODE or ident.name != node_id:
            raise TLSError(f"certificate {cert} is for {ident}, not for node {node_id!r}: issue one with "
                           f"`ukehi certs issue DIR --node {node_id}`")
        return cls(server_context(ca, cert, key), client_context(ca, cert, key), ident, (ca, cert, key))

    @classmethod
    def from_dir(cls, node_id: str, directory: str) -> "NodeTLS":
        """`ca.pem` and `node.pem`/`node.key` (or `<id>.pem`/`<id>.key`) in `directory`."""
        ca = os.path.join(directory, "ca.pem")
        for stem in ("node", node_id):
            cert, key = os.path.join(directory, f"{stem}.pem"), os.path.join(directory, f"{stem}.key")
            if os.path.isfile(cert):
                return cls.load(node_id, ca, cert, key)
        raise TLSError(f"--tls-dir {directory} holds neither node.pem nor {node_id}.pem; issue the node's "
                       f"certificate with `ukehi certs issue {directory} --node {node_id}`")


@dataclass(frozen=True)
class ClientTLS:
    """What a client presents: a client certificate for KV ops and status, an admin one for
    admin verbs (either may be missing; a missing admin one means admin verbs go over the
    client certificate, and the node refuses them)."""

    client: ssl.SSLContext | None
    admin: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.client is None and self.admin is None:
            raise TLSError("a TLS client needs a client or an admin certificate")

    def context(self, admin: bool) -> ssl.SSLContext:
        chosen = self.admin if admin else self.client
        return chosen or self.client or self.admin  # type: ignore[return-value]

    @classmethod
    def from_dir(cls, directory: str, *, client_name: str = "client", admin_name: str = "admin") -> "ClientTLS":
        ca = os.path.join(directory, "ca.pem")
        found: dict[str, ssl.SSLContext | None] = {}
        for role, name in (("client", client_name), ("admin", admin_name)):
            cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
            found[role] = client_context(ca, cert, key) if os.path.isfile(cert) else None
        if found["client"] is None and found["admin"] is None:
            raise TLSError(f"TLS directory {directory} holds neither {client_name}.pem nor {admin_name}.pem; "
                           f"issue one with `ukehi certs issue {directory} --client {client_name}`")
        return cls(found["client"], found["admin"])


# Process-wide: which TLS material reaches which node address. The harness registers a
# run's nodes once (harness/db.py), so every `UkehiClient` it, its workloads and its
# nemeses make uses the run's certificates without being told; an explicit `tls=` wins.
_REGISTRY: dict[str, ClientTLS] = {}
_ENV_CACHE: dict[str, ClientTLS] = {}


def _key(address: str | tuple[str, int]) -> str:
    if isinstance(address, tuple):
        host, port = address
    else:
        host, _, port_text = address.rpartition(":")
        port = int(port_text)
    return f"{host.strip('[]')}:{port}"


def register_cluster_tls(addresses: Iterable[str | tuple[str, int]], tls: ClientTLS | None) -> None:
    """Clients in this process reach ADDRESSES with TLS (None: plain TCP, an --insecure run)."""
    for a in addresses:
        if tls is None:
            _REGISTRY[_key(a)] = None  # type: ignore[assignment]
        else:
            _REGISTRY[_key(a)] = tls


def forget_cluster_tls(addresses: Iterable[str | tuple[str, int]]) -> None:
    for a in addresses:
        _REGISTRY.pop(_key(a), None)


def client_tls_for(address: str | tuple[str, int]) -> ClientTLS | None:
    """TLS for a client connection to ADDRESS: registered, else `$UKEHI_TLS_DIR`, else None."""
    key = _key(address)
    if key in _REGISTRY:
        return _REGISTRY[key]
    directory = os.environ.get(ENV_TLS_DIR)
    if not directory:
        return None
    if directory not in _ENV_CACHE:
        _ENV_CACHE[directory] = ClientTLS.from_dir(directory)
    return _ENV_CACHE[directory]
