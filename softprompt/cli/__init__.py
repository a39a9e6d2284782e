"""Thin command-line shells over library functions. Each `cmd_<name>.py` module is one subcommand."""
