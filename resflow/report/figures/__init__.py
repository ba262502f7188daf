"""Matplotlib figures of a results dir's tables."""
