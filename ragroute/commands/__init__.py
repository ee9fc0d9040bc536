"""The ``ragroute`` subcommands, one module each."""
