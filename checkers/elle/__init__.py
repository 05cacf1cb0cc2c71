"""An Elle-style transactional checker (Kingsbury & Alvaro, VLDB 2020), in Python.

``check(history, "list-append" | "rw-register")`` infers each key's version order
(list prefixes; or initial state, writes-follow-reads, the Raft index a write reports,
and optionally process and real-time order), builds the dependency graph (ww, wr, rw,
process, realtime), finds its strongly connected components and a short cycle of each
class in each, and reports the anomalies (G0, G1a, G1b, G1c, G-single, G-nonadjacent,
G2-item and their -process/-realtime variants, lost-update, internal, future-read,
incompatible-order, cyclic-versions, duplicate-elements, garbage-read) with the
consistency models they rule out. Pure: imports nothing of the harness.
"""

from checkers.elle.check import DEFAULT_CONSISTENCY, ELLE_MODELS, check, explain
from checkers.elle.models import ANOMALY_TYPES, MODELS, ruled_out, weakest
from checkers.elle.txn import Txn, TxnError, transactions

__all__ = ["ANOMALY_TYPES", "DEFAULT_CONSISTENCY", "ELLE_MODELS", "MODELS", "Txn", "TxnError", "check",
           "explain", "ruled_out", "transactions", "weakest"]
