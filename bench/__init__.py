"""``make bench``: the load benchmark (``bench/run.py``) and its ledger baseline."""
