"""Crossdock domain: pure models and engines; imports nothing else of the project."""
