"""Plots and pages rendered from a stored history."""
