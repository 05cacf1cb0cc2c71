"""Workloads: what clients do, and which checkers judge it."""
