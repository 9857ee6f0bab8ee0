"""The real-peer fixtures for the tests of ``tests/peers`` itself."""

from peers import kamailio_registrar, sip_users, sipp_runner

__all__ = ["kamailio_registrar", "sip_users", "sipp_runner"]
