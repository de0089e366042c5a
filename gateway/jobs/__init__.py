"""Daily runs that post to the ledger, each exactly once per date: the agent network's profit
sharing, and payouts (money out, T+1); to come: deposits, fees, hold expiry."""
