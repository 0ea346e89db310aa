"""Subcommands about models: ``crelu models``."""

from __future__ import annotations

from .cli import emit
from .zoo import list_models, model_info


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_models)


def _models(args) -> int:
    emit([model_info(name) for name in list_models()], as_json=args.json)
    return 0
