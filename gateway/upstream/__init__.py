"""Links to other parties that must not lose a message: the billers' connectors."""
