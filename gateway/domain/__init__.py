"""The registry's records and their vocabulary: agents, merchants, terminals,
cards, billers and bills, the validation of what people type, and the demo world."""
