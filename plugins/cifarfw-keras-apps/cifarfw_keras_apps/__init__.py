"""cifarfw-keras-apps: every keras.applications constructor as a cifarfw model (keras/<name>)."""
