"""cifarfw's comparison of runs, shipped as a plugin (entry point ``compare``)."""
