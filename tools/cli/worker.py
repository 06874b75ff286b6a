"""``hearth worker``: serve this machine's models to a ``hearth serve`` on another machine.

    hearth worker --print-key                  # this box's public key (made on first use)
    hearth worker --join tcp://HOST:PORT --server-key KEY [--model ID] [--also ID] [settings]

It starts one worker process per model (``--model``, and each ``--also``) with this box's own
settings (``--models-dir``, ``--parallel``, ``--ctx-size``, ``--threads``…, the same flags as
``hearth serve``), and joins the scheduler at ``--join`` over one CURVE-encrypted connection
(tools/cli/worker_link.py). The scheduler must list this box's public key; ``--server-key`` (or
``--server-key-file``) is the scheduler's, which ``hearth serve --worker-listen`` prints.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from hearth.tools import logs
from hearth.tools.curve_keys import (
    SCHEDULER_KEY,
    WORKER_KEY,
    CurveKeyError,
    check_public_key,
    key_path,
    load_or_create,
)
from hearth.tools.registry import ModelRegistry
from hearth.tools.setting_parsers import tcp_endpoint
from hearth.tools.settings import SettingsError, build_parser, resolve


def add_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="serve this machine's models to a hearth server elsewhere",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--join", metavar="tcp://HOST:PORT",
                   help="the scheduler's --worker-listen address to join")
    p.add_argument("--server-key", metavar="KEY",
                   help="the scheduler's CURVE public key (printed by hearth serve)")
    p.add_argument("--server-key-file", metavar="PATH",
                   help="a file holding the scheduler's public key (its key file will do)")
    p.add_argument("--print-key", action="store_true",
                   help="print this box's CURVE public key (made on first use) and exit")
    p.add_argument("--also", action="append", default=[], metavar="MODEL",
                   help="serve this model too (repeatable); --model is always served")
    build_parser(p)


def _server_key(args: argparse.Namespace) -> str:
    if args.server_key:
        return check_public_key(args.server_key, "--server-key")
    path = Path(args.server_key_file).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise CurveKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in text.splitlines():  # a bare key, or the "public = …" line of a key file
        name, eq, value = line.partition("=")
        candidate = value if eq and name.strip() == "public" else line
        if candidate.strip():
            return check_public_key(candidate, f"the key in {path}")
    raise CurveKeyError(f"{path} holds no key")


def run_worker(args: argparse.Namespace) -> int:
    try:
        if args.print_key:
            public, _secret = load_or_create(key_path(WORKER_KEY))
            print(public)
            print(f"(key pair stored in {key_path(WORKER_KEY)}; list the public key in the "
                  "server's [workers] table or --worker-keys-file)", file=sys.stderr)
            return 0
        if not args.join or not (args.server_key or args.server_key_file):
            print("hearth worker: --join tcp://HOST:PORT and --server-key (or "
                  "--server-key-file) are needed", file=sys.stderr)
            return 2
        join = tcp_endpoint(args.join)
        server = _server_key(args)
        settings = resolve(args)
        public, secret = load_or_create(key_path(WORKER_KEY))
    except (SettingsError, CurveKeyError, ValueError) as exc:
        print(f"hearth worker: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    models = [settings.model, *[m for m in args.also if m != settings.model]]
    models_dir = Path(settings.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    from hearth.tools.cli.bootstrap import default_model_ids, ensure_default_models
    from hearth.tools.cli.catalogue import CatalogueError

    if any(m in default_model_ids() for m in models):  # as hearth serve installs them
        try:
            ensure_default_models(models_dir)
        except CatalogueError as exc:
            print(f"hearth worker: {exc}", file=sys.stderr)
            return 3
    missing = [m for m in models if ModelRegistry(models_dir).get(m) is None]
    if missing:
        print(f"hearth worker: not in {models_dir}: {', '.join(missing)} (expected "
              f"{missing[0]}.gguf)", file=sys.stderr)
        return 2
    from hearth.tools.cli.worker_link import LinkKeys, WorkerAgent

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    agent = WorkerAgent(settings, join, LinkKeys(public, secret, server), models, say)
    say(f"hearth worker: serving {', '.join(models)}; joining {join} with public key {public}")
    try:
        return agent.run(lambda: stop["now"])
    finally:
        agent.close()


def scheduler_key_hint() -> str:
    """Where ``hearth serve --worker-listen`` keeps its key pair (for messages)."""
    return str(key_path(SCHEDULER_KEY))
