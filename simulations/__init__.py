"""Deterministic Byzantine simulations of a channel."""
