"""Experiments run by ``physgen experiment NAME`` (see physgen/cli/experiment.py)."""
