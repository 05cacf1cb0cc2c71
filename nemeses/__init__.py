"""Fault families, one module each; every family is a composable package."""
