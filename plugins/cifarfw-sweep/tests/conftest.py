"""The sweep tests' fixtures, from sweep_helpers (shared with the ray plugin's tests)."""

from sweep_helpers import env, fake_site

__all__ = ["env", "fake_site"]
