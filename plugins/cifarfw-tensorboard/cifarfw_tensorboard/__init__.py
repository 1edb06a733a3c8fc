"""cifarfw's TensorBoard reporter, shipped as a plugin (entry point ``tensorboard``)."""
