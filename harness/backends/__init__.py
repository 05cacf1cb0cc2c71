"""Backends turn a node name into a handle with a small set of verbs (start, kill, pause, ...)."""
