"""``python -m plausipy`` runs the CLI."""

from plausipy._cli import main

main(prog_name="plausipy")
