"""LazyFS for the harness: lose writes that were never fsynced (see fs.py and mount.py)."""
