"""sipwarden: protects SIP PBXs from scanners, enumeration, cracking, floods and toll fraud."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up lazily: importlib.metadata pulls in socket, selectors and
    # threading, and the sans-IO core (``import sipwarden.sip``) must not.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            return version("sipwarden")
        except PackageNotFoundError:  # a source tree that was not installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'sipwarden' has no attribute {name!r}")
