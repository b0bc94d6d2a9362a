"""portctl: declarative UPnP IGD port mappings. See README.md."""

__version__ = "0.1.0"
__all__ = ["__version__"]
