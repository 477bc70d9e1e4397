"""The top layer: the ``opcd`` command (``cli.main``), one module per group of commands."""
