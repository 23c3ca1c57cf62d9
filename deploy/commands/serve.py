"""``caduceus serve``: the whole service on this machine until Ctrl-C (``deploy.local_service``).

Without ``--config``, one model: SmolLM2-135M on vLLM's CPU backend (``--model PATH`` for another model
directory or GGUF file), or ``--scripted`` for the scripted Hermes engine. With ``--config FILE``, the
same document a RayService's ``serveConfigV2`` passes to ``deploy.app:build_app``.
"""

from __future__ import annotations

import argparse
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
    local: dict[str, Any] = {"device": "cpu", **({"model_source": args.model} if args.model else {})}
    return load_config({"models": [local]}, source="serve")


def run(args: argparse.Namespace) -> int:
    try:
        config = config_of(args)
    except ConfigError as exc:
        print(f"caduceus serve: {exc}", file=sys.stderr)
        return 2
    from deploy.local_service import local_service  # noqa: PLC0415 - imports Ray
    from orchestrator.api.auth import ApiKeysError  # noqa: PLC0415 - as local_service does

    stop = threading.Event()
    _stop_on_signals(stop)
    print("starting: embedded Redis (unless REDIS_URL), local Ray, the Serve application ...", flush=True)
    try:
        with local_service(config, host=args.host, port=args.port, api_key=args.api_key) as service:
            # Ray's start replaced our SIGTERM handler with its own, which kills Ray's processes and
            # exits on the spot, leaving the embedded Redis (and Serve) behind: ours again, so that a
            # signal stops Serve, then Ray, then Redis, in order.
            _stop_on_signals(stop)
            print(f"Caduceus is serving {', '.join(config.model_names)} at {service.url}", flush=True)
            print(f"  export CADUCEUS_URL={service.url} CADUCEUS_API_KEY={service.api_key}", flush=True)
            print('  then: caduceus run "What is 17 * 23?" --tools calculator    (Ctrl-C stops the service)')
            while not stop.wait(1.0):  # a timed wait: the signal handler runs between its ticks
                pass
            print("stopping ...", flush=True)
    except ApiKeysError as exc:
        print(f"caduceus serve: {exc}", file=sys.stderr)
        return 2
    print("stopped.", flush=True)
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT (Ctrl-C) set ``stop``; the service then shuts down in order, and further
    signals while it does cannot cut that short."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
