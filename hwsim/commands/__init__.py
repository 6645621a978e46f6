"""One module per ``hwsim`` subcommand (see hwsim/cli.py), and the argument checks they share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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


def output_file(path, option: str, create_parents: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written as a file (not a folder, in a writable
    folder: an existing one, or with ``create_parents`` one made now, as the writer would); returns it as
    a Path. ValueError names the option and the reason."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if create_parents and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{option} {path}: cannot create the folder {parent} ({exc.strerror or exc})") from None
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: the folder {parent} does not exist")
    probe = parent / f".{p.name}.write-test-{os.getpid()}"
    try:
        with open(probe, "w"):
            pass
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {parent} ({exc.strerror or exc})") from None
    return p
