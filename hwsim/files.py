"""Checks on the files hwsim writes, shared by the CLI and the long runs (training, sweeps)."""

from __future__ import annotations

import os
from pathlib import Path


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
