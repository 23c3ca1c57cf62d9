"""``caduceus demo``: a real model runs a two-step tool-calling agent run (``deploy.agent_demo``).

``--model PATH`` runs another local model (a Hugging Face directory or a GGUF file), ``--endpoint URL`` an
OpenAI-compatible server (vLLM, llama.cpp); ``--protocol`` shows the Hermes wire format on a scripted
output instead (no model at all).
"""

from __future__ import annotations

import argparse
from typing import Any

from deploy.commands import protocol_demo


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("demo", help="a real model runs a two-step tool-calling agent run")
    parser.add_argument("--model", help="a local model directory or GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--endpoint", help="an OpenAI-compatible server root, e.g. http://localhost:8000")
    parser.add_argument("--served-model", default="", help="the model name the endpoint serves")
    parser.add_argument("--protocol", action="store_true", help="the wire-format demo on a scripted output")
    parser.add_argument("--chunk", type=int, default=7, help="--protocol: characters per streamed piece")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.protocol:
        return protocol_demo.run(args)
    # The agent demo imports torch and the sandbox machinery: only when it runs.
    from deploy import agent_demo  # noqa: PLC0415

    return agent_demo.main(model=args.model, endpoint=args.endpoint, served_model=args.served_model)
