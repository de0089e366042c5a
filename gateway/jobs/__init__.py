"""Daily runs that post to the ledger, each exactly once per date: payouts (money out, T+1)."""
