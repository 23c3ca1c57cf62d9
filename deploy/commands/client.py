"""``caduceus run``, ``caduceus runs list|show|cancel`` and ``caduceus tools list``: a running Caduceus
service, driven over its REST API.

``run "TEXT"`` submits a run and, unless ``--no-follow``, follows its event stream: each tool call and
its result, each step, then the status, stop reason and usage on stderr and the answer on stdout.
``--json`` prints the API's JSON on stdout instead of the human views (``run`` prints the final run).

Every command takes ``--url`` (default ``$CADUCEUS_URL``, else http://127.0.0.1:8000) and ``--api-key``
(default ``$CADUCEUS_API_KEY``, else none). Exit codes:

    0  done; for ``run --follow``, the run completed (it answered)
    1  ``run --follow``: the run ended without completing (failed, cancelled, or incomplete: a limit)
    2  the command line was wrong (argparse)
    3  the API refused the request (its error's message and code are printed: unknown id, bad key...)
    4  the service could not be reached, or its event stream was lost for good
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from deploy.commands.progress import Progress, run_details, run_table
from deploy.commands.timeline import timeline
from orchestrator.client import APIConnectionError, APIError, CaduceusError, Client, Run

Command = Callable[[Client, argparse.Namespace], int]
DEFAULT_URL = "http://127.0.0.1:8000"


def exit_code(error: CaduceusError) -> int:
    """What the CLI exits with for ``error``: 3 the API refused the request, 4 no answer, else 1."""
    if isinstance(error, APIError):
        return 3
    return 4 if isinstance(error, APIConnectionError) else 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    common = _common()
    run = subparsers.add_parser(
        "run",
        parents=[common],
        help="submit a run to the service and follow it",
        epilog="exit status: 0 the run completed, 1 it ended otherwise (failed, cancelled, a limit), "
        "3 the API refused the request, 4 the service is not reachable",
    )
    run.add_argument("text", help="what the user says")
    run.add_argument("--thread", help="continue this thread (conversation)")
    run.add_argument("--tools", type=_names, default=[], help="tools the run may use, comma-separated")
    run.add_argument("--model", help="the model to run it on (default: the service's first)")
    run.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the run's progress until it ends (default: follow)",
    )
    run.set_defaults(handler=_handler(_run))

    runs = subparsers.add_parser("runs", help="list, show or cancel the service's runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="your runs, newest first")
    listing.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    listing.add_argument("--after", metavar="ID", help="list the runs older than this one")
    listing.set_defaults(handler=_handler(_list))
    for name, command, helped in (("show", _show, "show a run"), ("cancel", _cancel, "cancel a run")):
        action = actions.add_parser(name, parents=[common], help=helped)
        action.add_argument("id", help="the run's id")
        action.set_defaults(handler=_handler(command))
        if name == "show":
            action.add_argument(
                "--timeline",
                action="store_true",
                help="then its steps: model and tool seconds as bars, each call and its outcome",
            )

    tools = subparsers.add_parser("tools", help="the tools a running service offers its runs")
    tool_actions = tools.add_subparsers(dest="action", required=True, metavar="ACTION")
    tool_list = tool_actions.add_parser("list", parents=[common], help="list the service's tools")
    tool_list.set_defaults(handler=_handler(_tools))


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the service's root (default: $CADUCEUS_URL or {DEFAULT_URL})")
    common.add_argument("--api-key", help="the API key (default: $CADUCEUS_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    return common


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _handler(command: Command) -> Callable[[argparse.Namespace], int]:
    """The command with a client of the service; a failure is one line on stderr and its exit code."""

    def handle(args: argparse.Namespace) -> int:
        url = args.url or os.environ.get("CADUCEUS_URL") or DEFAULT_URL
        api_key = args.api_key or os.environ.get("CADUCEUS_API_KEY") or None
        try:
            with Client(url, api_key or "") as client:
                return command(client, args)
        except CaduceusError as exc:
            print(f"caduceus: error: {exc}", file=sys.stderr)
            return exit_code(exc)

    return handle


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _show_run(run: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        _print_json(run)
    else:
        print(text)


def _run(client: Client, args: argparse.Namespace) -> int:
    run = client.submit(args.text, tools=args.tools, thread_id=args.thread, model=args.model)
    if not args.follow:
        _show_run(dict(run.raw), args.json, f"{run.id} {run.status}")
        return 0
    try:
        done = follow(client, run, Progress(sys.stdout, sys.stderr), answer=not args.json)
    except KeyboardInterrupt:
        print(f"\nthe run goes on; stop it with `caduceus runs cancel {run.id}`", file=sys.stderr)
        raise
    if args.json:
        _print_json(done)
    return 0 if done["status"] == "completed" else 1


def follow(client: Client, run: Run, progress: Progress, *, answer: bool = True) -> dict[str, Any]:
    """Show ``run`` live until it ends (its events, reconnecting as needed); return its final state, as the
    API's JSON."""
    progress.started(run.raw)
    for event in client.events(run.id):
        progress.event(event)
    done = dict(client.get(run.id).raw)
    progress.finished(done, answer=answer)
    return done


def _list(client: Client, args: argparse.Namespace) -> int:
    page = client.list(limit=args.limit, after=args.after)
    if args.json:
        _print_json(dict(page.raw))
        return 0
    if not page.data:
        print("no runs", file=sys.stderr)
        return 0
    print("\n".join(run_table([run.raw for run in page.data])))
    if page.has_more:
        print(f"more: caduceus runs list --after {page.data[-1].id}", file=sys.stderr)
    return 0


def _show(client: Client, args: argparse.Namespace) -> int:
    run = dict(client.get(args.id).raw)
    _show_run(run, args.json, "\n".join(run_details(run)))
    if args.timeline and not args.json:
        print("\n".join(timeline(client.events(run["id"]))))  # a run in progress: until it ends
    return 0


def _cancel(client: Client, args: argparse.Namespace) -> int:
    run = client.cancel(args.id)
    if args.json:
        _print_json(dict(run.raw))
    elif run.status == "cancelled":
        print(f"{run.id} cancelled")
    else:
        # A worker holds the run: it hears of the request within a heartbeat and stops it.
        print(f"{run.id} {run.status}: cancellation requested")
    return 0


def _tools(client: Client, args: argparse.Namespace) -> int:
    tools = client.tools()
    if args.json:
        _print_json(
            [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools]
        )
        return 0
    width = max((len(tool.name) for tool in tools), default=0)
    for tool in tools:
        summary = tool.description.strip().splitlines()[0] if tool.description.strip() else ""
        print(f"{tool.name:<{width}}  {summary}")
    return 0
