"""cifarfw-keras: the cifarfw trainer for any keras.Model (TensorFlow backend).

Importing this package imports no TensorFlow; ``cifarfw_keras.trainer`` does.
"""

__version__ = "0.1.0"
