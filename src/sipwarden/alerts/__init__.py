"""Alert sinks: how security events leave sipwarden (JSON lines, human text, the store)."""
