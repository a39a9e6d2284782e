"""softprompt serve: multi-tenant OpenAI-compatible server of many soft prompts on one frozen base model."""

from __future__ import annotations

import argparse

HELP = "serve tasks' prompts over HTTP (OpenAI-compatible) on one frozen base model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.api.client import add_store_option
    from softprompt.cli.common import add_base_options
    from softprompt.cli.options import add_config_options
    from softprompt.serving.config import ServeConfig

    add_base_options(p)
    add_store_option(p, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--exit-after", type=float, default=None,
                   help="stop after this many seconds (tests, demos; default: run until interrupted)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of the HTTP server")
    add_config_options(p.add_argument_group("serving options"), ServeConfig, "serve")


def run(args: argparse.Namespace) -> int:
    from softprompt.cli.common import load_base_from
    from softprompt.cli.options import build
    from softprompt.serving.config import ServeConfig
    from softprompt.serving.store import open_store

    config = build(ServeConfig, args, "serve")  # validated before the model loads
    store = open_store(args.store)  # before the model too: a store that cannot be reached fails in a second

    from softprompt.api.server import serve

    base = load_base_from(args)
    serve(base, store, config, host=args.host, port=args.port, exit_after=args.exit_after,
          log_level=args.log_level)
    return 0
