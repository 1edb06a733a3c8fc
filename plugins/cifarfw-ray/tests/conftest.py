"""The sweep plugin's test helpers (the fake numpy plugin in a site folder) serve these tests too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cifarfw-sweep" / "tests"))

from sweep_helpers import env, fake_site

__all__ = ["env", "fake_site"]
