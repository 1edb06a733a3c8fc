"""cifarfw-timm: every timm architecture as a cifarfw model (timm/<name>)."""
