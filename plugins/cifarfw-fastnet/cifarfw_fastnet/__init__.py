"""cifarfw-fastnet: a fast CIFAR-10 network as a third-party cifarfw model plugin.

The plugin module (:mod:`cifarfw_fastnet.plugin`) imports no torch; the network is in
:mod:`cifarfw_fastnet.model`.
"""

__version__ = "0.1.0"
