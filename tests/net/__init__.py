"""Tests of the net room (capture reading, packet decoding)."""
