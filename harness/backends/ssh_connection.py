"""One SSH connection to one host through paramiko: host keys, commands, files.

- Host key policy: ``strict`` (the default) accepts only keys already in the
  known-hosts file and refuses an unknown one with a message that says how to
  add it; ``accept-new`` adds an unknown key to the file (trust on first use) but
  still refuses a *changed* key; ``ignore`` checks nothing (throwaway hosts only).
- Commands: stdout and stderr are read together as they arrive. paramiko only
  re-opens the SSH window when the application reads, so reading one stream to
  its end while the other fills would stall the remote command forever (the
  "window-size hang"); here both are drained on every wake-up.
- Every command has a deadline: the remote side runs it under ``timeout`` and
  the local side gives up (exit 124, like coreutils) a little later regardless.
- Files go through one SFTP session, serialised by a lock (nemeses call the
  backend from several threads).
"""

from __future__ import annotations

import select
import shlex
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import paramiko

from harness.backends.base import BackendError

HOST_KEY_POLICIES = ("strict", "accept-new", "ignore")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
TIMEOUT_EXIT = 124  # what coreutils' timeout returns; exec() returns it on a local timeout too
# Grace after the remote `timeout` should have fired before the local side gives up.
_LOCAL_GRACE_S = 5.0
_READ_CHUNK = 1 << 16
_SFTP_TIMEOUT_S = 60.0
# One writer at a time for every known-hosts file this process appends to.
_KNOWN_HOSTS_LOCK = threading.Lock()


class SSHError(BackendError):
    """Connecting to or talking with a host failed; the message says what to do next."""


class UnknownHostKeyError(SSHError):
    """The host's key is not in the known-hosts file and the policy is strict."""


@dataclass(frozen=True)
class SSHOptions:
    """How to reach the hosts; shared by every host of a cluster."""

    user: str | None = None  # None: the local user name, as ssh does
    key: str | None = None  # private key file; None: ssh-agent and ~/.ssh/id_*
    port: int = 22
    host_key_policy: str = "strict"
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.host_key_policy not in HOST_KEY_POLICIES:
            raise SSHError(f"--ssh-host-key-policy {self.host_key_policy!r}: choose one of "
                           f"{', '.join(HOST_KEY_POLICIES)}")
        if not 1 <= self.port <= 65535:
            raise SSHError(f"--ssh-port {self.port}: give a TCP port between 1 and 65535")
        if self.key is not None and not Path(self.key).expanduser().is_file():
            raise SSHError(f"--ssh-key {self.key}: no such file; give the private key that the hosts "
                           "accept (e.g. ~/.ssh/id_ed25519)")

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()

    @property
    def user_name(self) -> str:
        if self.user:
            return self.user
        import getpass

        return getpass.getuser()


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH (and paramiko) name a host in known_hosts: ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_base64()


class _StrictPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, options: SSHOptions) -> None:
        self.options = options

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        path = self.options.known_hosts_path
        host = hostname[1:].split("]")[0] if hostname.startswith("[") else hostname
        raise UnknownHostKeyError(
            f"host {hostname} is unknown: its {key.get_name()} key {fingerprint(key)} is not in {path}. "
            f"Check the fingerprint with the host's administrator, then add it with "
            f"`ssh-keyscan -p {self.options.port} {host} >> {path}`, or pass "
            f"--ssh-host-key-policy accept-new to trust a new host on first use "
            f"(ignore skips the check entirely: only for throwaway hosts)")


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use: remember the key in the known-hosts file (appended, like OpenSSH)."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = self.options.known_hosts_path
        line = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
        with _KNOWN_HOSTS_LOCK:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(line)


class SSHConnection:
    """A live connection to HOST: ``run`` commands, read and write files."""

    def __init__(self, host: str, options: SSHOptions) -> None:
        self.host = host
        self.options = options
        self.client = paramiko.SSHClient()
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.options.user_name}@{self.host}:{self.options.port}"

    def connect(self) -> "SSHConnection":
        opts = self.options
        if opts.host_key_policy == "ignore":
            self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # kept in memory only
        else:
            if opts.known_hosts_path.is_file():
                self.client.load_host_keys(str(opts.known_hosts_path))
            policy = _StrictPolicy(opts) if opts.host_key_policy == "strict" else _AcceptNewPolicy(opts)
            self.client.set_missing_host_key_policy(policy)
        key = str(Path(opts.key).expanduser()) if opts.key else None
        try:
            self.client.connect(self.host, port=opts.port, username=opts.user_name, key_filename=key,
                                look_for_keys=key is None, allow_agent=key is None,
                                timeout=opts.connect_timeout, banner_timeout=opts.connect_timeout,
                                auth_timeout=opts.connect_timeout)
        except UnknownHostKeyError:
            self.client.close()
            raise
        except paramiko.BadHostKeyException as err:
            self.client.close()
            name = known_hosts_name(self.host, opts.port)
            raise SSHError(
                f"host {name} presents a DIFFERENT {err.key.get_name()} key ({fingerprint(err.key)}) than "
                f"the one in {opts.known_hosts_path} ({fingerprint(err.expected_key)}): this may be an "
                f"attack, or the host was reinstalled. If you know it was, remove the old key with "
                f"`ssh-keygen -R '{name}' -f {opts.known_hosts_path}` and connect again") from None
        except paramiko.AuthenticationException as err:
            self.client.close()
            raise SSHError(f"{self.where} refused our credentials ({err}): check --ssh-user and --ssh-key, "
                           "and that the key's public half is in the user's ~/.ssh/authorized_keys") from None
        except (OSError, paramiko.SSHException) as err:
            self.client.close()
            raise SSHError(f"cannot connect to {self.where}: {err}; is sshd running there and "
                           "is --ssh-port right?") from None
        transport = self.client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)  # notice a dead host rather than hang on it
        return self

    def close(self) -> None:
        with self._sftp_lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except (OSError, paramiko.SSHException):
                    pass
                self._sftp = None
        self.client.close()

    # -- commands -------------------------------------------------------------------
    def run(self, command: str | Sequence[str], timeout: float = 10.0, stdin: bytes | None = None,
            ) -> tuple[int, bytes, bytes]:
        """Run COMMAND (a shell string, or an argv to quote) on the host; (rc, stdout, stderr).

        rc 124 and a note on stderr when it outlives TIMEOUT seconds.
        """
        if not isinstance(command, str):
            command = shlex.join(command)
        # The remote `timeout` ends the command itself (a closed channel would not); -k
        # follows up with SIGKILL for one that ignores SIGTERM.
        bounded = f"timeout -k 2 {timeout:g} sh -c {shlex.quote(command)}"
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"the connection to {self.where} is closed; the host may have gone down")
        try:
            chan = transport.open_session(timeout=self.options.connect_timeout)
        except (paramiko.SSHException, OSError) as err:
            raise SSHError(f"cannot open a channel to {self.where}: {err}") from None
        try:
            chan.exec_command(bounded)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            started = time.monotonic()
            rc, out, err = self._collect(chan, timeout + _LOCAL_GRACE_S, command)
            if rc in (-1, 128 + 9) and time.monotonic() - started >= timeout:
                # The remote `timeout` had to SIGKILL it (sshd then reports a signal, not 124).
                rc, err = TIMEOUT_EXIT, err + f"\ntimed out after {timeout:g} s on {self.host}: {command}\n".encode()
            return rc, out, err
        except (paramiko.SSHException, OSError) as err:
            raise SSHError(f"command on {self.where} failed to run: {command}: {err}") from None
        finally:
            chan.close()

    def _collect(self, chan: paramiko.Channel, limit: float, command: str) -> tuple[int, bytes, bytes]:
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + limit
        chan.setblocking(False)
        while True:
            # Drain both streams on every wake-up, so neither can fill the window.
            while chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.eof_received or chan.closed:
                    return chan.recv_exit_status(), bytes(out), bytes(err)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                note = f"\ntimed out after {limit - _LOCAL_GRACE_S:g} s on {self.host}: {command}\n"
                return TIMEOUT_EXIT, bytes(out), bytes(err) + note.encode()
            # The channel's fileno becomes readable on data on either stream and on close.
            select.select([chan], [], [], min(0.2, remaining))

    def check(self, command: str | Sequence[str], timeout: float = 30.0, stdin: bytes | None = None,
              what: str = "") -> str:
        """Run COMMAND; its stdout as text, or SSHError showing stderr when it fails."""
        rc, out, err = self.run(command, timeout, stdin)
        if rc != 0:
            shown = command if isinstance(command, str) else shlex.join(command)
            raise SSHError(f"{what or 'command'} failed on {self.host} (exit {rc}): {shown}: "
                           f"{err.decode(errors='replace').strip() or 'no output'}")
        return out.decode(errors="replace")

    # -- files ----------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
                # A host that stops answering fails a file transfer after this long instead of
                # hanging it (and with it the teardown) forever.
                self._sftp.get_channel().settimeout(_SFTP_TIMEOUT_S)
            except (paramiko.SSHException, OSError) as err:
                raise SSHError(f"cannot open SFTP to {self.where} ({err}): the host's sshd needs the "
                               "sftp subsystem (Subsystem sftp ... in sshd_config)") from None
        return self._sftp

    def read_file(self, path: str) -> bytes:
        with self._sftp_lock:
            try:
                with self._sftp_client().open(path, "rb") as f:
                    f.prefetch()
                    return f.read()
            except FileNotFoundError:
                raise FileNotFoundError(f"{path} does not exist on {self.host}") from None

    def write_file(self, path: str, data: bytes, mode: int | None = None, atomic: bool = False) -> None:
        """Write PATH on the host; in place (same inode) unless ATOMIC (temp file, then rename)."""
        with self._sftp_lock:
            sftp = self._sftp_client()
            target = f"{path}.ukj-tmp" if atomic else path
            with sftp.open(target, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
                f.flush()
            if mode is not None:
                sftp.chmod(target, mode)
            if atomic:
                sftp.posix_rename(target, path)

    def get(self, remote: str, local: Path) -> bool:
        """Copy REMOTE to LOCAL; False if REMOTE does not exist."""
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                if not stat.S_ISREG(sftp.stat(remote).st_mode or 0):
                    return False
            except FileNotFoundError:
                return False
            local.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(local))
            return True

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        with self._sftp_lock:
            sftp = self._sftp_client()
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)


def resolve_ipv4(host: str) -> str:
    """HOST's IPv4 address (the address peers and partitions use); SSHError if it has none."""
    try:
        return socket.gethostbyname(host)
    except OSError as err:
        raise SSHError(f"cannot resolve host {host!r} ({err}): with --backend ssh, --nodes lists the hosts; "
                       "give host names this machine resolves, or IPv4 addresses") from None

