"""cifarfw-authoring: ``cifarfw new-plugin`` and ``cifarfw plugins check``, for plugin authors."""

__version__ = "0.1.0"
