"""The ``physgen`` command line: one module per subcommand, each with ``register(subparsers)``."""
