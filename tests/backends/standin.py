"""Test fixture: a tiny stand-in for a node, and the probes the tests run against it.

    standin.py serve HOST PORT         TCP: echoes lines, answers "time" with time.time()
                                       and "mono" with time.monotonic();
                                       UDP on the same port: prints "udp <payload>" per datagram
    standin.py probe HOST PORT TIMEOUT one TCP round trip; prints the RTT in ms; exit 1 on timeout
    standin.py rtt HOST PORT N         median RTT in ms over N round trips on one connection
    standin.py udp HOST PORT PAYLOAD   sends PAYLOAD three times as UDP datagrams
    standin.py udpseq HOST PORT TAG N  sends N datagrams "TAG:0" .. "TAG:N-1", 2 ms apart
    standin.py time HOST PORT          prints the server's time.time() and the local one

Not shipped: it only stands in for `ukehi node` until the node exists.
"""

from __future__ import annotations

import socket
import socketserver
import statistics
import sys
import threading
import time


class _TCP(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            text = line.strip()
            reply = repr(time.time()).encode() if text == b"time" else \
                repr(time.monotonic()).encode() if text == b"mono" else text
            self.wfile.write(reply + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(host: str, port: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))

    def udp_loop() -> None:
        while True:
            data, _ = udp.recvfrom(2048)
            print(f"udp {data.decode(errors='replace')}", flush=True)

    threading.Thread(target=udp_loop, daemon=True).start()
    with _Server((host, port), _TCP) as server:
        print(f"serving {host}:{port}", flush=True)
        server.serve_forever()


def _round_trip(sock: socket.socket, f) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    sock.sendall(b"ping\n")
    if f.readline() != b"ping\n":
        raise ConnectionError("bad echo")
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str]) -> int:
    cmd, host, port = argv[0], argv[1], int(argv[2])
    if cmd == "serve":
        serve(host, port)
        return 0
    if cmd == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                try:
                    s.sendto(argv[3].encode(), (host, port))
                except PermissionError:
                    pass  # an OUTPUT DROP rule refuses locally (EPERM): the datagram is dropped
                time.sleep(0.02)
        return 0
    if cmd == "udpseq":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(int(argv[4])):
                s.sendto(f"{argv[3]}:{i}".encode(), (host, port))
                time.sleep(0.002)
        return 0
    timeout = float(argv[3]) if cmd == "probe" else 5.0
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            f = sock.makefile("rb")
            if cmd == "probe":
                print(f"{_round_trip(sock, f):.3f}")
            elif cmd == "rtt":
                print(f"{statistics.median(_round_trip(sock, f) for _ in range(int(argv[3]))):.3f}")
            elif cmd == "time":
                sock.sendall(b"time\n")
                print(float(f.readline()), time.time())
    except (OSError, ConnectionError) as err:
        print(f"unreachable: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
