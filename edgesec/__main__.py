"""``python -m edgesec``: the same entry point as the ``edgesec`` console script."""

from edgesec._cli import run

if __name__ == "__main__":
    run()
