"""The ``hwsim`` command line. Each subcommand lives in its own module that defines
``register(subparsers)``; this file only lists them, so adding a command touches one line here."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

# subcommand modules, in the order ``hwsim --help`` lists them
COMMANDS = [
    "hwsim.commands.formats",
    "hwsim.commands.run",
    "hwsim.commands.train",
    "hwsim.commands.cost",
    "hwsim.commands.sweep",
    "hwsim.commands.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsim", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return rc
    except BrokenPipeError:
        # the reader went away (`hwsim formats | head -3`): stop quietly, as Unix tools do; stdout goes to
        # /dev/null so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it
    except (ValueError, FileNotFoundError, KeyError) as exc:  # user errors: one clear line, no traceback
        print(f"hwsim {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
