"""Helpers the alexnet tests import by name (a unique module name: tests of all plugins share sys.path)."""

from __future__ import annotations

import importlib.metadata as md

import pytest


def torch_trainer_installed() -> bool:
    return any(ep.name == "torch" for ep in md.entry_points(group="cifarfw"))


requires_torch_trainer = pytest.mark.skipif(
    not torch_trainer_installed(), reason="needs the torch trainer (pip install -e plugins/cifarfw-torch)"
)


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Non-zero exit, exactly one 'Error: ...' line on stderr (warnings aside), no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
