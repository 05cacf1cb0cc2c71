"""Packet delay, jitter, loss and reordering in user space, for kernels without sch_netem.

Run inside a node's namespace; iptables sends that node's outgoing packets to
nfqueue 0 (with --queue-bypass, so packets flow untouched if this process dies)
and this program releases each one after the delay, drops some, and lets some
through at once (netem's reordering: those overtake the delayed ones).

    python -m harness.backends.delayer --delay-ms 100 --jitter-ms 10 --loss-pct 5 --reorder-pct 0

Prints ``ready`` once the queue is bound. On SIGTERM it releases every held packet
and exits 0.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import sys
import time
from types import FrameType

from harness.backends.nfqueue import NF_ACCEPT, NF_DROP, NfQueue


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.backends.delayer", description=__doc__)
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform in [delay-jitter, delay+jitter]")
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--reorder-pct", type=float, default=0.0, help="share sent at once, overtaking delayed ones")
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rng = random.Random(args.seed)
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    held: list[tuple[float, int]] = []  # (release time, packet id)
    with NfQueue(args.queue) as queue:
        print("ready", flush=True)
        while not stopping:
            now = time.monotonic()
            while held and held[0][0] <= now:
                queue.verdict(heapq.heappop(held)[1], NF_ACCEPT)
            wait = min(held[0][0] - now, 0.2) if held else 0.2
            try:
                readable, _, _ = select.select([queue], [], [], max(wait, 0.0))
            except InterruptedError:
                continue
            if not readable:
                continue
            now = time.monotonic()
            for pid in queue.read_packet_ids():
                if args.loss_pct and rng.random() * 100 < args.loss_pct:
                    queue.verdict(pid, NF_DROP)
                elif args.reorder_pct and rng.random() * 100 < args.reorder_pct:
                    queue.verdict(pid, NF_ACCEPT)
                else:
                    delay = args.delay_ms + (rng.uniform(-args.jitter_ms, args.jitter_ms) if args.jitter_ms else 0.0)
                    if delay <= 0:
                        queue.verdict(pid, NF_ACCEPT)
                    else:
                        heapq.heappush(held, (now + delay / 1000.0, pid))
        for _, pid in held:  # leaving: nothing held may be lost because shaping ended
            queue.verdict(pid, NF_ACCEPT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
