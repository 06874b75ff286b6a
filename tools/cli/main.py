"""The ``hearth`` command: serve, key, models, status, bench, worker."""

from __future__ import annotations

import argparse
import sys

from hearth.tools.settings import SettingsError, build_parser, resolve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth", description=(
        "A private, offline, OpenAI-compatible LLM API server powered by llama.cpp."))
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser(sub.add_parser("serve", help="start the server"))
    key = sub.add_parser("key", help="print the generated API key (or make a new one)")
    key.add_argument("--renew", action="store_true", help="replace the saved key")
    from hearth.tools.cli import models as models_cli

    models_cli.add_models_parser(sub)
    from hearth.tools.cli import status as status_cli

    status_cli.add_status_parser(sub)
    from hearth.tools.cli import worker as worker_cli

    worker_cli.add_worker_parser(sub)
    from hearth.tools.cli import bench as bench_client

    bench_client.add_arguments(sub.add_parser(
        "bench", help="benchmark an OpenAI-compatible server (or two, compared)",
        description=bench_client.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = resolve(args)
        except SettingsError as exc:
            print(f"hearth: {exc}", file=sys.stderr)
            return 2
        from hearth.tools.cli.serve import serve

        return serve(settings)
    if args.command == "key":
        from hearth.tools.cli.keys import key_path, load_or_create_key

        print(load_or_create_key(renew=args.renew))
        print(f"(stored in {key_path()})", file=sys.stderr)
        return 0
    if args.command == "models":
        return models_cli.run_models(args)
    if args.command == "status":
        return status_cli.run_status(args)
    if args.command == "worker":
        return worker_cli.run_worker(args)
    if args.command == "bench":
        return bench_client.main(args)
    return 2

