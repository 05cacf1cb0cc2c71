"""A minimal nfnetlink_queue client in pure Python (no libnetfilter_queue needed).

Just enough of the protocol to hold packets and release them later: bind a queue
number in the current network namespace, receive packet ids (metadata only, no
payload), and issue ACCEPT/DROP verdicts in any order. Message layouts follow
``linux/netfilter/nfnetlink_queue.h``; all nfnetlink payload integers are big-endian,
netlink headers host-endian.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Iterator

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33  # not exported by Python's socket module
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # len, type


class NfQueueError(OSError):
    """The kernel refused a queue request (errno and what was asked)."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, off)
        if length < _NLA.size:
            return
        yield kind & 0x3FFF, data[off + _NLA.size:off + length]  # drop NLA_F_NESTED / BYTEORDER bits
        off += (length + 3) & ~3


class NfQueue:
    """One bound queue; use as a context manager. Not thread-safe."""

    def __init__(self, queue_num: int = 0, max_len: int = 20_000) -> None:
        self.queue_num = queue_num
        self._seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            for opt, value in ((SO_RCVBUFFORCE, 8 << 20), (socket.SO_RCVBUF, 8 << 20)):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, opt, value)
                    break
                except PermissionError:
                    continue
            # A full receive buffer must not make the kernel report ENOBUFS: it drops, we go on.
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
            self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
            self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", max_len)))
        except BaseException:
            self.sock.close()
            raise

    def _message(self, msg_type: int, flags: int, attrs: bytes) -> bytes:
        self._seq += 1
        body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", self.queue_num) + attrs
        return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags,
                           self._seq, 0) + body

    def _config(self, attrs: bytes) -> None:
        self.sock.send(self._message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, attrs))
        seq = self._seq
        for _ in range(64):  # bounded: the ack is normally the first message
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _, mseq, _ = _NLMSG.unpack_from(data, off)
                if kind == NLMSG_ERROR and mseq == seq:
                    (err,) = struct.unpack_from("=i", data, off + _NLMSG.size)
                    if err:
                        raise NfQueueError(-err, f"nfqueue {self.queue_num} config refused: {os.strerror(-err)}")
                    return
                off += (length + 3) & ~3 if length else len(data)
        raise NfQueueError(0, f"no answer to nfqueue {self.queue_num} config")

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_packet_ids(self) -> list[int]:
        """Ids of the packets waiting in the socket now (non-blocking; [] if none)."""
        ids: list[int] = []
        for _ in range(256):  # bounded drain per call; the caller loops
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _, _, _ = _NLMSG.unpack_from(data, off)
                if length < _NLMSG.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    for akind, payload in _attrs(data[off + _NLMSG.size + 4:off + length]):
                        if akind == NFQA_PACKET_HDR:
                            ids.append(struct.unpack_from("!I", payload)[0])
                            break
                off += (length + 3) & ~3
        return ids

    def verdict(self, packet_id: int, verdict: int) -> None:
        self.sock.send(self._message(NFQNL_MSG_VERDICT, NLM_F_REQUEST,
                                     _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))))

    def close(self) -> None:
        try:
            self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0)))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "NfQueue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
