"""Benchmarks, run as scripts (python bench/NAME.py).

A package only so that mypy does not take bench/monitor.py for tests/monitor.
"""
