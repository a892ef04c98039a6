"""``python -m channel`` is the ``parley`` command (used to start node processes)."""

from channel.cli.main import app

app()
