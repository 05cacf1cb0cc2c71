"""Checkers judge a history. They import nothing from the harness but the history type."""
