"""``python -m cifarfw``: the same as the ``cifarfw`` command (torchrun launches it this way)."""

from cifarfw.cli import main

main()
