"""Command-line entry point for Crossdock."""
