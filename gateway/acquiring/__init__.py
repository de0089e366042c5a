"""The transaction engine: what a terminal's request goes through, from its decoded
message to its answer (processor, router, steps per family, recording, store)."""
