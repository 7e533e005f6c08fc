"""``uipbench backbones`` (the cards and whether each is ready) and ``uipbench env sync`` (their environments)."""
from __future__ import annotations

import argparse
import json

from .common import add_format_argument


def list_backbones(args: argparse.Namespace) -> int:
    from ..adapters.registry import all_status

    rows = all_status()
    if args.format == "json":
        print(json.dumps([{**s.__dict__, "weights": str(s.weights) if s.weights else None, "state": s.state}
                          for s in rows], indent=2))
        return 0
    header = f"{'backbone':24} {'state':24} {'env':9} {'width':>5}  layer"
    print(header)
    print("-" * len(header))
    for s in rows:
        print(f"{s.name:24} {s.state:24} {s.environment:9} {s.width:>5}  {s.layer[:70]}")
        if s.hint:
            print(f"{'':24} -> {s.hint}")
    return 0


def env_sync(args: argparse.Namespace) -> int:
    from ..adapters.envs import env_specs, sync

    specs = env_specs()
    names = args.names or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown environment(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    for name in names:
        sync(specs[name], force=args.force)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backbones", help="list the backbone cards and whether each is ready")
    add_format_argument(p)
    p.set_defaults(func=list_backbones)

    env = subparsers.add_parser("env", help="manage the per-backbone virtual environments")
    esub = env.add_subparsers(dest="env_command", required=True)
    p = esub.add_parser("sync", help="create or update environments (default: all)")
    p.add_argument("names", nargs="*")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.set_defaults(func=env_sync)
