"""softprompt serve: multi-tenant OpenAI-compatible server of many soft prompts on one frozen base model."""

from __future__ import annotations

import argparse

HELP = "serve tasks' prompts over HTTP (OpenAI-compatible) on one frozen base model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options
    from softprompt.cli.options import add_config_options
    from softprompt.serving.config import ServeConfig

    add_base_options(p)
    p.add_argument("--registry", required=True, help="registry directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--exit-after", type=float, default=None,
                   help="stop after this many seconds (tests, demos; default: run until interrupted)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of the HTTP server")
    add_config_options(p.add_argument_group("serving options"), ServeConfig, "serve")


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.api.server import serve
    from softprompt.cli.options import build
    from softprompt.serving.config import ServeConfig

    config = build(ServeConfig, args, "serve")  # validated before the model loads
    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    serve(base, args.registry, config, host=args.host, port=args.port, exit_after=args.exit_after,
          log_level=args.log_level)
    return 0
