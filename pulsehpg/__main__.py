"""``python -m pulsehpg``: the same as the ``pulsehpg`` command."""

from .cli import main

if __name__ == "__main__":
    main()
