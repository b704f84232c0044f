"""``python -m calbridge`` runs the CLI."""

from calbridge.cli import main

main()
