"""``caduceus demo``: the service comes up locally and a real model runs a two-step tool-calling task
through it (``deploy.service_demo``), then everything stops.

``--model PATH`` serves another model on vLLM's CPU backend (a Hugging Face model directory or a GGUF file,
e.g. a Hermes 3 3B on disk) the same way; ``--scripted`` serves the scripted Hermes engine instead of a
model. ``--url URL`` runs the task against a Caduceus service that is already up (``caduceus serve``, a
Helm deployment) with ``--api-key`` (default ``$CADUCEUS_API_KEY``), and leaves it up: a smoke test.
``--endpoint URL`` runs the task against an OpenAI-compatible server (vLLM, llama.cpp) from this process,
without the Ray service (that server is the serving path). ``--protocol`` shows the Hermes wire format on
a scripted output (no model at all).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from deploy.commands import protocol_demo


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("demo", help="bring the service up locally and run a two-step tool task")
    parser.add_argument("--model", help="a model directory or GGUF file for vLLM (default: SmolLM2-135M)")
    parser.add_argument("--scripted", action="store_true", help="serve the scripted Hermes engine, no model")
    parser.add_argument("--url", help="a running Caduceus service to run the task against (default: none)")
    parser.add_argument("--api-key", help="with --url: the API key (default: $CADUCEUS_API_KEY)")
    parser.add_argument("--endpoint", help="an OpenAI-compatible server root, e.g. http://localhost:8000")
    parser.add_argument("--served-model", default="", help="the model name the endpoint serves")
    parser.add_argument("--protocol", action="store_true", help="the wire-format demo on a scripted output")
    parser.add_argument("--chunk", type=int, default=7, help="--protocol: characters per streamed piece")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.protocol:
        return protocol_demo.run(args)
    if args.endpoint:
        # The in-process agent imports the sandbox machinery: only when it runs.
        from deploy import agent_demo  # noqa: PLC0415

        return agent_demo.main(endpoint=args.endpoint, served_model=args.served_model)
    from deploy import service_demo  # noqa: PLC0415 - imports Ray when the service starts

    if args.url:
        return service_demo.against(args.url, args.api_key or os.environ.get("CADUCEUS_API_KEY"))
    return service_demo.main(model=args.model, scripted=args.scripted)
