"""Rule generators (``sipwarden rules ...``): host and edge rulesets from the configuration.

Each generator is a pure function from :class:`~sipwarden.config.Config` to
text that the user reviews and loads; nothing here applies anything.
"""
