"""The package version, recorded in every store it writes."""

__version__ = "0.2.0"
