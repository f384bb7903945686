"""``python -m fedflower`` is the ``fedflower`` command."""

from fedflower.cli import main

main()
