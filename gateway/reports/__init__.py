"""Read-only views of the day for people and files."""
