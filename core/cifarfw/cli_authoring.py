"""Moved to the cifarfw-authoring plugin (`new-plugin`, `plugins check`); kept until cli.py stops calling it."""


def add_commands(*_: object) -> None: ...
