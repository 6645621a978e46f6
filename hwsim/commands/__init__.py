"""One module per ``hwsim`` subcommand (see hwsim/cli.py)."""
