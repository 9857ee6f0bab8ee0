"""Tap mode: read captures (and later live interfaces and HEP feeds) and report what SIP did."""
