"""cifarfw-keras-cnn: the study's Keras CNN as a cifarfw model plugin (no TensorFlow at import)."""

__version__ = "0.1.0"
