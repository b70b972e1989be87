"""The package version: a leaf module, so that the disk cache can key on it without importing
the package face."""
__version__ = "0.1.0"
