"""Daily runs that post to the ledger: the agent network's profit sharing (to come: deposits, payouts,
hold expiry)."""
