"""The back office (``posgw web``): the operators' console and the agents' portal,
server-rendered over the same database and services as the CLI (docs/backoffice.md)."""
