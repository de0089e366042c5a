"""Every change a person makes, as one call with an actor, audited."""
