"""The one error type for a user's mistake: printed as one line by the CLI, no traceback."""
from __future__ import annotations

from typing import Iterable

__all__ = ["UserError", "unknown_name"]


class UserError(ValueError):
    """A bad value from the user (a name, a number, a path, a shape, a config key)."""


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> UserError:
    """``unknown process 'foo'; valid: ve, vp, edm``."""
    return UserError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
