"""``python -m sipwarden``: the same as the ``sipwarden`` command."""

from sipwarden.cli import main

if __name__ == "__main__":
    main()
