"""Reading the cost model's TOML files (array configs, energy and area tables) with one kind of error."""

from __future__ import annotations

import tomllib
from pathlib import Path


def load(path, what: str, table: str | None = None) -> dict:
    """The mapping in the TOML file ``path``; ``what`` names the file in errors ("area table", ...).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for invalid TOML. With ``table``,
    a file holding only ``[table]`` gives that table's contents (keys may sit at top level or under it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None
    if table is not None and set(data) == {table}:
        data = data[table]
    return data
