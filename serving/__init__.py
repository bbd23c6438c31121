"""Serving: the model repository, model servers, container launcher and clients."""
