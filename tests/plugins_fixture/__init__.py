"""Plugin modules for the plugin-host tests (loaded through fake entry points)."""
