"""`python -m ilp_cli` runs the `ilp` command."""

from .main import main

main()
