"""A plugin whose import fails, as a broken third-party plugin would."""

raise RuntimeError("this plugin is broken on purpose")
