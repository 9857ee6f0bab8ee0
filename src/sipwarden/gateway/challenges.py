"""Challenges that look like the PBX's own, for accounts that do not exist.

A PBX that answers 404 for an unknown account and 401/407 for a known one is
an enumeration oracle (svwar). The gateway turns the 404 into a challenge,
and that challenge must not be told from a real one by its form either: it
copies the last real challenge the PBX sent (the same header, realm,
algorithm, qop and parameter order, the same reason phrase), with a nonce of
the same length and alphabet, new for every request, as a PBX's would be.
"""

from __future__ import annotations

import re
import string
from typing import Final

from .tokens import TokenSigner

__all__ = ["ChallengeMimic"]

_NONCE: Final = re.compile(r'(nonce=")([^"]*)(")', re.IGNORECASE)
_OPAQUE: Final = re.compile(r'(opaque=")([^"]*)(")', re.IGNORECASE)
_HEX: Final = frozenset(string.hexdigits)
_BASE64: Final = string.ascii_letters + string.digits + "+/"


class ChallengeMimic:
    """The PBX's last challenge per header, replayed with fresh nonces."""

    def __init__(self, signer: TokenSigner, realm: str) -> None:
        self._signer = signer
        self._realm = realm
        # header name (WWW-Authenticate / Proxy-Authenticate) -> (reason phrase, value)
        self._learned: dict[str, tuple[str, str]] = {}

    def learn(self, header: str, reason: str, value: str) -> None:
        self._learned[header] = (reason, value)

    def challenge(self, header: str, seed: str) -> tuple[str, str]:
        """(reason phrase, header value) of a challenge for the request named by ``seed``."""
        learned = self._learned.get(header)
        if learned is None:
            # No real challenge seen yet: a plain RFC 2617/8760 one.
            nonce = self._signer.digest("nonce", seed, size=24)
            reason = (
                "Unauthorized"
                if header == "WWW-Authenticate"
                else ("Proxy Authentication Required")
            )
            return reason, f'Digest realm="{self._realm}", nonce="{nonce}", qop="auth"'
        reason, value = learned
        value = _NONCE.sub(lambda match: self._lookalike(match, seed, "nonce"), value)
        value = _OPAQUE.sub(lambda match: self._lookalike(match, seed, "opaque"), value)
        return reason, value

    def _lookalike(self, match: re.Match[str], seed: str, name: str) -> str:
        template = match.group(2)
        return f"{match.group(1)}{self._like(template, seed + name)}{match.group(3)}"

    def _like(self, template: str, seed: str) -> str:
        """A value of the template's length and alphabet (hex stays hex, and its case)."""
        size = len(template)
        raw = b""
        counter = 0
        while len(raw) < size:
            raw += self._signer.digest(seed, str(counter), size=32).encode()
            counter += 1
        if template and set(template) <= _HEX:
            alphabet = "0123456789abcdef" if template == template.lower() else "0123456789ABCDEF"
        else:
            alphabet = _BASE64
        return "".join(alphabet[byte % len(alphabet)] for byte in raw[:size])
