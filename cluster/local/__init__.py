"""Lifecycle of the local stack: Pulsar standalone, a single-node Ray, Ray Serve."""
