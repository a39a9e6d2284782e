"""softprompt tenant: create tenants and API keys in a registry directory (keys are shown once, stored hashed)."""

from __future__ import annotations

import argparse
import os

HELP = "create a tenant, add or revoke its API keys, list tenants (in a registry directory)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "key", "revoke", "list"],
                   help="create NAME: new tenant + first key; key NAME: another key; revoke NAME: revoke all its "
                        "keys; list: tenants")
    p.add_argument("name", nargs="?", help="tenant name (letters, digits, '-' and '_')")
    p.add_argument("--registry", default=os.environ.get("SOFTPROMPT_REGISTRY"), required=False,
                   help="registry directory (default: env SOFTPROMPT_REGISTRY)")


def run(args: argparse.Namespace) -> int:
    from softprompt.errors import InputError
    from softprompt.serving.store import Store

    if not args.registry:
        raise InputError("pass --registry DIR (or set SOFTPROMPT_REGISTRY)")
    if args.action != "list" and not args.name:
        raise InputError(f"`softprompt tenant {args.action}` needs the tenant NAME")
    store = Store(args.registry)
    if args.action == "create":
        key = store.create_tenant(args.name)
        print(f"tenant {args.name} created; API key (shown once, keep it secret):\n{key}")
    elif args.action == "key":
        print(store.add_key(args.name))
    elif args.action == "revoke":
        print(f"revoked {store.revoke_keys(args.name)} key(s) of {args.name}")
    else:
        for t in store.tenants():
            print(f"{t['tenant']}\t{t['active_keys']} key(s)\t{t['tasks']} task(s)")
    return 0
