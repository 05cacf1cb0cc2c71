"""Serve the app with the standard library's WSGI server, one thread per request (so a
zip download or a slow page never blocks the refreshes of another tab)."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import sys
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .app import App

LOOPBACK_NAMES = ("localhost",)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """One short line per request on stderr, no reverse DNS lookups."""

    def address_string(self) -> str:
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make(app: App, host: str, port: int) -> WSGIServer:
    server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)


def serve(results_dir: str, host: str, port: int, *, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    app = App(results_dir)
    if not is_loopback_host(host):
        out.write(f"serve: WARNING: listening on {host}, not loopback: anyone who can reach this machine can "
                  f"read every run in {app.root} (re-analysis stays loopback-only). Use --host 127.0.0.1 to "
                  "keep it to this machine.\n")
    server = make(app, host, port)
    shown = f"[{host}]" if ":" in host else host
    out.write(f"serve: {app.root} at http://{shown}:{server.server_port}/ (Ctrl-C stops)\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
