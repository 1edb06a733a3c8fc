"""cifarfw-ray: the ``ray`` executor of ``cifarfw sweep``."""

__version__ = "0.1.0"
