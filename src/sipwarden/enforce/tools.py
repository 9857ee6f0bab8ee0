"""Running the kernel tools (``nft``, ``ipset``, ``iptables``, ``conntrack``) with clear failures.

Every failure becomes an :class:`~sipwarden.errors.EnforcementError` that says
what to do about it: which Debian package provides a missing tool, that a
permission problem needs root or CAP_NET_ADMIN, or the tool's own message.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from typing import Final

from sipwarden.errors import EnforcementError

__all__ = ["find_tool", "run_tool"]

# Which Debian package provides each tool, for the "not installed" message.
_PACKAGES: Final = {
    "nft": "nftables",
    "ipset": "ipset",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "iptables-restore": "iptables",
    "ip6tables-restore": "iptables",
    "conntrack": "conntrack",
}

# The sbin directories hold these tools, and a non-root PATH often lacks them.
_SBIN: Final = "/usr/sbin:/sbin"

_PERMISSION_HINTS: Final = ("Operation not permitted", "Permission denied", "must be root")


def find_tool(name: str) -> str:
    """The absolute path of ``name``, or an error naming the package to install."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN)
    if path is None:
        package = _PACKAGES.get(name, name)
        raise EnforcementError(
            f"`{name}` is not installed: run `apt-get install {package}` (as root)"
        )
    return path


def run_tool(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 10.0) -> str:
    """Run a kernel tool and return its standard output.

    Raises:
        EnforcementError: the tool is missing, was refused permission, timed out
            or failed; the message carries the tool's own diagnostic.
    """
    command = [find_tool(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(  # noqa: S603 - fixed tools, arguments built by us
            command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise EnforcementError(f"`{argv[0]}` did not finish within {timeout:g} s") from None
    except OSError as error:
        raise EnforcementError(f"cannot run `{argv[0]}`: {error.strerror or error}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        if any(hint in message for hint in _PERMISSION_HINTS):
            message += " (kernel enforcement needs root or CAP_NET_ADMIN)"
        raise EnforcementError(f"`{' '.join(argv[:3])}` failed: {message}")
    return done.stdout
