"""Kept for one release so `python -m bots.cli` and old `chorus` scripts still work; the command line now lives in
the composition root, chorus/cli.py (`python -m chorus`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from chorus.cli import main as chorus_main

    return chorus_main(argv)


if __name__ == "__main__":
    sys.exit(main())
