"""``python -m kirchnet`` runs the command line (:mod:`kirchnet.cli`)."""

from .cli import app

app(prog_name="kirchnet")
