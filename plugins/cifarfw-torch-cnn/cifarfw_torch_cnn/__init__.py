"""cifarfw-torch-cnn: the study's PyTorch CNN as a cifarfw model plugin.

The plugin module (:mod:`cifarfw_torch_cnn.plugin`) imports no torch; the network is in
:mod:`cifarfw_torch_cnn.model`.
"""

__version__ = "0.1.0"
