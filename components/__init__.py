"""Custom TFX components, module files and data sources."""
