"""Pulumi components of the estate: with `__main__.py`, the only code that imports pulumi."""
