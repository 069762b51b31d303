"""The `ilp` command."""
