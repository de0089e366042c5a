"""The ``posgw`` command line."""
