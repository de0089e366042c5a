"""The ``posgw`` command line: ``main`` assembles one module per group of commands."""
