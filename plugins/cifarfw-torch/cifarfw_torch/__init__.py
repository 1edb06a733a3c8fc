"""cifarfw-torch: the trainer for every ``torch.nn.Module`` model of cifarfw.

The entry-point module :mod:`cifarfw_torch.plugin` imports no torch (``cifarfw --help``
loads every plugin); the trainer lives in :mod:`cifarfw_torch.trainer`, the batch
pipeline in :mod:`cifarfw_torch.pipeline`, device and precision choice in
:mod:`cifarfw_torch.runtime`.
"""

__version__ = "0.1.0"
