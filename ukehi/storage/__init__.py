"""Durable storage for a node: WAL v2 (and the v1 read path), hard state, snapshots."""
