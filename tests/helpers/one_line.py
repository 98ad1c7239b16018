"""The CLI's bad-input contract, checked in-process: ``physgen ARGV`` exits 2 with one line on
stderr, no traceback, naming each of ``needles`` (the bad value, its flag or file)."""
from __future__ import annotations

from physgen.cli.main import main

__all__ = ["one_line"]


def one_line(capsys, argv, *needles) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
