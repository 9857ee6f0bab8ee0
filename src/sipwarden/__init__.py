"""sipwarden: protects SIP PBXs from scanners, enumeration, cracking, floods and toll fraud."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sipwarden")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
