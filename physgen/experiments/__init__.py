"""Experiments run by ``physgen experiment NAME`` (table: :mod:`physgen.cli.experiment`)."""
