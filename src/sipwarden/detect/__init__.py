"""Detectors: each looks at every observation and reports SecurityEvents (see engine.Detector)."""
