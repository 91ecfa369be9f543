"""`python -m citizen_lookup.cli` runs the CLI (used by `serve` to start its worker)."""

from citizen_lookup.cli import main

main()
