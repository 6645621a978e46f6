"""One module per ``hwsim`` subcommand (see hwsim/cli.py), and the argument checks they share."""

from __future__ import annotations

import argparse


def limit_arg(text) -> int | None:
    """argparse type of ``--limit``: a positive number of test images, or ``all`` (None). 0 is refused
    (it would mean no images; ``all`` says the whole test set)."""
    s = str(text).strip()
    if s.lower() == "all":
        return None
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of images or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of images or 'all', got {text!r}")
    return n
