"""``python -m rnnkit`` and the ``rnnkit`` console script: :func:`rnnkit.cli.main` behind a guard.

:func:`run` imports the command (NumPy, the layers, the application) inside a ``try``: a Ctrl-C
while that loads -- the first half second of every run -- ends with one line and exit status 130,
not a traceback.  ``rnnkit/__init__.py`` imports nothing eagerly, so reaching this module is cheap.
"""

import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT


def run() -> None:
    """Load and run the ``rnnkit`` command; exit with its status."""
    try:
        from rnnkit.cli import main
    except KeyboardInterrupt:
        if sys.stderr is not None:
            try:
                sys.stderr.write("rnnkit: interrupted\n")
            except (OSError, ValueError):
                pass
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(main())


if __name__ == "__main__":
    run()
