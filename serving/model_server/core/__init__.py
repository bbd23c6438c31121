"""The models' lifecycle (source, manager, server core) and the one entry point per API."""
