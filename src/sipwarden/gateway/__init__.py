"""The in-line gateway: a SIP firewall and lightweight SBC in front of the PBX.

``core`` decides (sans-IO: bytes and ``now`` in, actions out); the asyncio
listeners only move bytes; ``tls`` and ``rtpengine`` are the TLS contexts and
the media-anchoring client.
"""
