"""Entry point of the `ilp` command (placeholder until the CLI lands)."""

import sys


def main() -> None:
    sys.exit("ilp: not yet")
