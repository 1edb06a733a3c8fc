"""The contract test kit, as plugins import it: ``from cifarfw.testing import ...``.

This module is the kit's stable import surface; the kit itself lives in the default
first-party plugin cifarfw-authoring (``cifarfw_authoring.kit``), beside ``cifarfw
new-plugin`` and ``cifarfw plugins check``, and is installed with cifarfw. A model plugin
runs it against itself in one line::

    from cifarfw.testing import check_model_plugin

    def test_contract(tmp_path):
        check_model_plugin("mine", runs_root=tmp_path)

docs/plugin-guide.md explains each check and the helpers below.
"""

from __future__ import annotations

try:
    from cifarfw_authoring import kit as _kit
except ModuleNotFoundError as err:  # pragma: no cover - cifarfw depends on cifarfw-authoring
    if err.name != "cifarfw_authoring":
        raise
    raise ModuleNotFoundError(
        "cifarfw.testing is provided by cifarfw-authoring, which cifarfw installs; reinstall it with "
        "`pip install cifarfw-authoring`",
        name=err.name,
    ) from None

from cifarfw_authoring.kit import *  # noqa: F403 - the surface is the kit's own __all__

__all__ = list(_kit.__all__)
