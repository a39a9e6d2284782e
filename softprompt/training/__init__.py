"""Losses, metrics, data and training recipes (explicit loops, no trainer framework)."""
