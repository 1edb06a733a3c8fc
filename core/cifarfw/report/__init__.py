"""The built-in reporters (console, run record).

``METRIC_TAGS`` and ``REQUIRED_METRICS`` are kept for plugins written against hook API 1;
the registry they come from is :mod:`cifarfw.metrics`.
"""

from cifarfw.metrics import REQUIRED as REQUIRED_METRICS
from cifarfw.metrics import TAGS as METRIC_TAGS

__all__ = ["METRIC_TAGS", "REQUIRED_METRICS"]
