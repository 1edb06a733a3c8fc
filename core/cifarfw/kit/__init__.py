"""The contract test kit's parts; plugins import them from :mod:`cifarfw.testing`, the stable surface."""
