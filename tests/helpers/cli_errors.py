"""The one check of a user's mistake on the CLI: exit status 2 and one line naming it."""
from physgen.cli.main import main


def error_line(capsys, argv, *needles):
    """``physgen ARGV`` exits 2 with one line on stderr, no traceback, containing every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
