"""The registry's records and their vocabulary: agents, merchants, terminals,
cards, billers and bills, and the validation of what people type."""
