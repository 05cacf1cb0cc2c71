"""`ukehi certs`: make a cluster CA and the node, client and admin certificates it signs.

    ukehi certs init DIR                       # DIR/ca.pem, DIR/ca.key (the key never leaves DIR)
    ukehi certs issue DIR --node n1            # DIR/n1.pem, DIR/n1.key   (CN=n1, OU=node)
    ukehi certs issue DIR --client app         # DIR/app.pem, DIR/app.key (CN=app, OU=client)
    ukehi certs issue DIR --admin ops          # DIR/ops.pem, DIR/ops.key (CN=ops, OU=admin)

`--out OUTDIR` writes the pair elsewhere (with `--as NAME` to choose the file names, e.g.
`--as node` for a node's own `--tls-dir`), `--days N` sets the validity (default 825),
`--san` adds DNS names or IP addresses (informational; identities are checked by CN and OU,
see `ukehi.tls`). Keys are ECDSA P-256, written with mode 0600.

This is a tool, not the node: it needs the `cryptography` package, imported only here and
only when the command runs, so `ukehi node` itself needs nothing beyond the standard
library's `ssl`. The same functions make the harness's per-run CA (harness/db.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from ukehi.tls import ROLES

__all__ = ["add_arguments", "run", "init_ca", "issue", "Issued", "CertsError"]

EXIT_BAD_ARGUMENT = 254
DEFAULT_DAYS = 825
CA_DAYS = 3650


class CertsError(ValueError):
    pass


@dataclass(frozen=True)
class Issued:
    cert: str
    key: str


def _crypto() -> Any:
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        raise CertsError("`ukehi certs` needs the `cryptography` package (pip install cryptography); "
                         "the node itself does not") from None
    import cryptography

    return cryptography


def _write(path: str, data: bytes, private: bool) -> None:
    # O_EXCL-free but never world-readable for keys: created 0600 before any byte is written.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    try:
        if private:
            os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def init_ca(directory: str, *, name: str = "ukehi-cluster-ca", force: bool = False,
            not_before: dt.datetime | None = None) -> Issued:
    """Make DIR/ca.pem and DIR/ca.key. Refuses to overwrite an existing CA unless FORCE.
    NOT_BEFORE backdates it (default: 5 minutes ago)."""
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    cert_path, key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    if not force and (os.path.exists(cert_path) or os.path.exists(key_path)):
        raise CertsError(f"{directory} already holds a CA ({cert_path}); every certificate it signed "
                         "would stop working if it were replaced. Use another directory, or --force")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ca")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or (now - dt.timedelta(minutes=5)))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Issued(cert_path, key_path)


def issue(
    ca_dir: str,
    name: str,
    role: str,
    *,
    out_dir: str | None = None,
    file_stem: str | None = None,
    days: float = DEFAULT_DAYS,
    sans: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    with_ca: bool = False,
) -> Issued:
    """Sign a certificate for principal NAME with ROLE (node, client, admin).

    Writes `<out_dir or ca_dir>/<file_stem or name>.pem` and `.key`; WITH_CA also copies
    `ca.pem` there (what a node's or a client's --tls-dir needs). NOT_BEFORE / NOT_AFTER
    override the validity (the tests make expired certificates this way).
    """
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if role not in ROLES:
        raise CertsError(f"role {role!r} must be one of {', '.join(ROLES)}")
    if not name or any(c in name for c in "=,:/ \t\n") or len(name) > 64:
        raise CertsError(f"name {name!r} must be 1-64 characters without '=', ',', ':', '/' or spaces")
    ca_cert_path, ca_key_path = os.path.join(ca_dir, "ca.pem"), os.path.join(ca_dir, "ca.key")
    if not (os.path.isfile(ca_cert_path) and os.path.isfile(ca_key_path)):
        raise CertsError(f"{ca_dir} holds no CA (ca.pem and ca.key); make one with `ukehi certs init {ca_dir}`")
    with open(ca_cert_path, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or (now - dt.timedelta(minutes=5))
    end = not_after or (now + dt.timedelta(days=days))
    names: list[x509.GeneralName] = []
    for san in ([name] if role == "node" else []) + list(sans):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if role == "node" else [])),
            critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    target = out_dir or ca_dir
    os.makedirs(target, exist_ok=True)
    stem = file_stem or name
    cert_path, key_path = os.path.join(target, f"{stem}.pem"), os.path.join(target, f"{stem}.key")
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    if with_ca and os.path.abspath(target) != os.path.abspath(ca_dir):
        with open(ca_cert_path, "rb") as f:
            _write(os.path.join(target, "ca.pem"), f.read(), private=False)
    return Issued(cert_path, key_path)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_command", metavar="COMMAND", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("init", help="make a cluster CA: DIR/ca.pem and DIR/ca.key",
                       description="Make a cluster CA: DIR/ca.pem (give it to every node and client) "
                                   "and DIR/ca.key (keep it here; it signs every certificate).")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--name", default="ukehi-cluster-ca", help="the CA's common name")
    p.add_argument("--force", action="store_true", help="replace an existing CA in DIR")
    p = sub.add_parser(
        "issue", help="sign a node, client or admin certificate with DIR's CA",
        description="Sign a certificate with the CA in DIR. The identity is CN=NAME, OU=role: "
                    "a node's NAME is its node id; a client certificate may do KV operations and "
                    "status; an admin certificate may also add/remove nodes, transfer leadership "
                    "and take snapshots.")
    p.add_argument("dir", metavar="DIR", help="the CA's directory (from `ukehi certs init`)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--node", metavar="ID", help="a node certificate for node ID")
    who.add_argument("--client", metavar="NAME", help="a client certificate (KV operations, status)")
    who.add_argument("--admin", metavar="NAME", help="an admin certificate (also membership, transfer, snapshot)")
    p.add_argument("--out", metavar="OUTDIR", help="write the pair (and ca.pem) here instead of DIR")
    p.add_argument("--as", dest="file_stem", metavar="STEM",
                   help="file names STEM.pem / STEM.key (default: the name; `--as node` for a node's --tls-dir)")
    p.add_argument("--days", type=float, default=DEFAULT_DAYS, help=f"validity in days (default {DEFAULT_DAYS})")
    p.add_argument("--san", action="append", default=[], metavar="DNS-OR-IP",
                   help="add a subject alternative name (repeatable)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.certs_command == "init":
            made = init_ca(args.dir, name=args.name, force=args.force)
            print(f"CA: {made.cert} (give it to every node and client); key: {made.key} (keep it here)")
            return 0
        role, name = next((r, getattr(args, r)) for r in ("node", "client", "admin") if getattr(args, r))
        if not args.days > 0:
            raise CertsError(f"--days {args.days}: give a positive number of days")
        made = issue(args.dir, name, role, out_dir=args.out, file_stem=args.file_stem, days=args.days,
                     sans=args.san, with_ca=args.out is not None)
        print(f"{role} certificate for {name!r}: {made.cert}, key {made.key}")
        return 0
    except (CertsError, OSError) as e:
        print(f"ukehi certs: error: {e}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
