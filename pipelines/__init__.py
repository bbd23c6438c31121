"""TFX pipeline definitions and their runners."""
