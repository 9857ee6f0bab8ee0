"""Building the ban manager a command needs from the configuration."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from sipwarden.detection_config import ban_settings

from .backend import BanBackend, BanShare, BanStore
from .manager import BanManager

if TYPE_CHECKING:
    from sipwarden.config import Config

__all__ = ["build_ban_manager", "node_name"]


def node_name(config: Config) -> str:
    """This node's name in shared bans: configured, else the host name."""
    return config.shared.node_name or socket.gethostname()


def kernel_backends(config: Config, allowlist: tuple[str, ...]) -> list[BanBackend]:
    """The kernel backends ``[enforce] backends`` names, in order."""
    settings = config.enforce
    backends: list[BanBackend] = []
    for name in settings.backends:
        if name == "nftables":
            from .nftables import NftablesBackend  # noqa: PLC0415 - only when configured

            backends.append(
                NftablesBackend(
                    allowlist=allowlist,
                    table=settings.nftables_table,
                    size=settings.max_kernel_bans,
                    flush_conntrack=settings.flush_conntrack,
                )
            )
        else:
            from .ipset import IpsetBackend  # noqa: PLC0415 - only when configured

            backends.append(
                IpsetBackend(
                    prefix=settings.ipset_prefix,
                    max_elements=settings.max_kernel_bans,
                    flush_conntrack=settings.flush_conntrack,
                )
            )
    return backends


def shared_state(config: Config) -> BanShare | None:
    if not config.shared.redis_url:
        return None
    from .redis import RedisShare  # noqa: PLC0415 - redis is imported only when configured

    return RedisShare(
        config.shared.redis_url, prefix=config.shared.key_prefix, node=node_name(config)
    )


def build_ban_manager(
    config: Config,
    *,
    store: BanStore | None,
    enforcing: bool,
    protected: tuple[str, ...] = (),
) -> BanManager:
    """The manager for one command.

    ``enforcing`` is false for the analysis of capture files: their bans are
    history, kept in the store, and never pushed into the kernel or to other nodes.
    ``protected`` are addresses allowlisted on top of ``[bans] allowlist`` (the
    gateway's PBXs).
    """
    allowlist = (*ban_settings(config.bans).allowlist, *protected)
    return BanManager(
        backends=kernel_backends(config, allowlist) if enforcing else (),
        store=store,
        share=shared_state(config) if enforcing else None,
        allowlist=allowlist,
        origin=node_name(config) if config.shared.redis_url else "",
        retry_interval=config.enforce.retry_interval,
    )
