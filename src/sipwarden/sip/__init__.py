"""The sans-IO SIP protocol core.

Bytes and ``now`` in, typed messages and events out: this package never
imports asyncio, sockets, files or the clock (a test enforces it). Start with
:func:`sipwarden.sip.parser.parse_message` and :class:`sipwarden.sip.parser.StreamParser`.
"""
