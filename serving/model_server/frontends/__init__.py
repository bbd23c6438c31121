"""Thin transports: REST (with its JSON) and gRPC, over the same API entry points."""
