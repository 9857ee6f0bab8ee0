"""Enforcement: the ban manager, its backends (memory, nftables, ipset, Redis) and the
host/edge rule generators.

This room sits at the I/O edge: it runs ``nft``, ``ipset`` and ``conntrack`` and
talks to Redis. The engine only *decides* bans (:class:`~sipwarden.engine.contract.BanDecision`);
:class:`~sipwarden.enforce.manager.BanManager` applies, persists, shares and lifts them.
"""
