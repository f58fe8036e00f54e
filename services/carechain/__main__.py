"""``python -m carechain`` runs the CLI."""

from carechain.cli import main

main()
