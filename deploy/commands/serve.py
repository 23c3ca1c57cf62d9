"""``caduceus serve``: the whole service on this machine until Ctrl-C (``deploy.local_service``).

Without ``--config``, one model: SmolLM2-135M on the CPU (``--model PATH`` for another GGUF file or model
directory), or ``--scripted`` for the scripted Hermes engine. With ``--config FILE``, the same document a
RayService's ``serveConfigV2`` passes to ``deploy.app:build_app``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any

from deploy.config import ConfigError, ServiceConfig, load_config, load_config_file


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("serve", help="run the whole service locally (Ctrl-C stops it)")
    parser.add_argument("--config", help="a service configuration file (YAML or JSON)")
    parser.add_argument("--model", help="a local GGUF file or model directory (default: SmolLM2-135M)")
    parser.add_argument("--scripted", action="store_true", help="the scripted Hermes engine, no model")
    parser.add_argument("--host", default="127.0.0.1", help="the HTTP address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the HTTP port (default: 8000)")
    parser.add_argument("--api-key", help="the API key to accept (default: $CADUCEUS_API_KEY, or a new one)")
    parser.set_defaults(handler=run)


def config_of(args: argparse.Namespace) -> ServiceConfig:
    if args.config:
        return load_config_file(args.config)
    if args.scripted:
        return load_config({"models": [{"preset": "hermes-3-3b", "engine": "scripted"}]}, source="serve")
    local: dict[str, Any] = {"engine": "local", **({"model_source": args.model} if args.model else {})}
    return load_config({"models": [local]}, source="serve")


def run(args: argparse.Namespace) -> int:
    try:
        config = config_of(args)
    except ConfigError as exc:
        print(f"caduceus serve: {exc}", file=sys.stderr)
        return 2
    from deploy.local_service import local_service  # noqa: PLC0415 - imports Ray

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting: embedded Redis (unless REDIS_URL), local Ray, the Serve application ...", flush=True)
    with local_service(config, host=args.host, port=args.port, api_key=args.api_key) as service:
        print(f"Caduceus is serving {', '.join(config.model_names)} at {service.url}", flush=True)
        print(f"  export CADUCEUS_URL={service.url} CADUCEUS_API_KEY={service.api_key}", flush=True)
        print('  then: caduceus run "What is 17 * 23?" --tools calculator    (Ctrl-C stops the service)')
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        print("stopping ...", flush=True)
    return 0
