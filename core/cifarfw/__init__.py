"""cifarfw: train and compare CIFAR-10 classifiers across frameworks, through plugins.

Plugin authors need :data:`hookimpl` and the specs in :mod:`cifarfw.specs`; see
docs/plugin-guide.md. This module imports nothing heavy.
"""

from cifarfw.hookspecs import HOOK_API_VERSION, hookimpl

__version__ = "0.1.0"
__all__ = ["HOOK_API_VERSION", "__version__", "hookimpl"]
