"""The orchestrator's ports: the three outside systems the loop talks to, each a small Protocol.

- ``ChatEngine``: streams a completion for a raw prompt string (vLLM, Ray Serve LLM, llama.cpp, scripted).
- ``ToolExecutor``: runs one ``ToolCall`` and returns its ``ToolResult`` (the tool workers, or in-process).
- ``RunStore``: where acknowledged steps, the tool-call ledger and events go (Redis, or in-process memory).

And the plain data they exchange: a completion request and its chunks, a run's fixed spec, its limits and
its checkpoint (the mutable state that is persisted after every step and that a resumed run starts from).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from toolbox.hermes import STOP
from toolbox.protocol import ToolCall, ToolResult, ToolSpec

StopReason: TypeAlias = Literal[
    "answer",
    "max_steps",
    "max_tool_calls",
    "deadline",
    "token_budget",
    "repeated_call",
    "cancelled",
    "json_invalid",
    "context_overflow",
    "tool_calls",  # the model called a tool that the client runs: the run ends, awaiting its output
]
#: What a run's events are (``RunStore.emit``, and the events the store writes itself): a closed set.
EventKind: TypeAlias = Literal[
    "delta",  # the model's text since the last delta (a live view; the committed turns are the record)
    "tool_call",  # a call starts (its arguments)
    "tool_result",  # a call ended (its outcome, the start of its content)
    "call_superseded",  # a step sampled again put another call where a ledgered one stood
    "step",  # a step was committed (its small record)
    "compacted",  # the prompt's window moved on
    "resumed",  # another worker took the run over
    "finished",  # the run ended (its stop reason): its last event
    "failed",  # the run failed through no fault of the model's: its last event
]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """One raw-prompt completion. ``session_id`` (the thread id) lets a router keep a conversation on the
    replica whose prefix cache already holds it. ``constraint`` is a decoding constraint (an xgrammar
    structural tag, ``toolbox.hermes.constraint``); an engine that cannot constrain ignores it. ``model``
    names the model the run asked for (empty: the engine's own); a router of engines dispatches on it."""

    prompt: str
    max_tokens: int = 1024
    stop: tuple[str, ...] = STOP
    sampling: Sampling = Sampling()
    session_id: str = ""
    constraint: dict[str, Any] | None = None
    model: str = ""


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last chunk of a stream carries the finish reason and, when the
    engine reports it, the token usage."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatEngine(Protocol):
    """Streams completions. ``model`` names the served model (used in spans and records)."""

    @property
    def model(self) -> str: ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]: ...


class ToolExecutor(Protocol):
    """Runs one call. Failures the model can fix come back as ``ToolResult.error``; ours raise.
    ``conversation`` names the run's conversation (``conversation_of``): tools that keep files keep them
    per conversation."""

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult: ...


def conversation_of(spec: RunSpec) -> str:
    """The conversation a run's tool calls belong to: its tenant's thread, as one opaque directory-safe
    name (so no two tenants' threads can ever share one, whatever their ids)."""
    return conversation_key(spec.tenant, spec.thread_id)


def conversation_key(tenant: str, thread_id: str) -> str:
    digest = hashlib.sha256(f"{tenant}\0{thread_id}".encode()).hexdigest()
    return f"c{digest[:40]}"


@dataclass(frozen=True)
class Limits:
    """When a run stops, and with which stop reason.

    - ``max_steps`` model turns (``max_steps``); ``deadline_s`` of wall clock from submission, enforced
      mid-step too (``deadline``); ``token_budget`` prompt plus completion tokens (``token_budget``).
    - ``max_tool_calls_per_step``: calls beyond it are not run (the model reads why) and the run stops
      after that step (``max_tool_calls``).
    - ``max_repeats``: the most times one identical call (same name and arguments) runs; the next one is
      refused and the run stops (``repeated_call``).
    - ``json_retries``: answers that fail the JSON schema are sent back this many times (``json_invalid``).
    - ``max_tokens`` per model turn; ``context_window`` of the model, which compaction keeps the prompt
      plus ``max_tokens`` within (``context_overflow`` only when even the newest turn does not fit).
    - ``max_tool_calls``: the most calls of the whole run (``None``: no bound but the others); a call past
      it is not run (the model reads why) and the run stops after that step (``max_tool_calls``).
    """

    max_steps: int = 16
    max_tool_calls_per_step: int = 8
    deadline_s: float = 600.0
    token_budget: int = 1_000_000
    max_repeats: int = 3
    json_retries: int = 2
    max_tokens: int = 1024
    context_window: int = 32768
    max_tool_calls: int | None = None


@dataclass(frozen=True)
class RunSpec:
    """What a run is, fixed at submission. ``prefix`` is the exact rendered bytes of the run's system
    turns (tools, JSON mode, the caller's system message): rendered once, replayed verbatim.

    ``constrained``: every model turn is decoded under a grammar, so that tool calls (or the JSON-mode
    answer) are valid by construction; engines that cannot constrain ignore it. ``tool_choice``: with
    ``constrained``, what model turn N may do, as OpenAI's ``tool_choice`` but per turn: ``"required"``
    (exactly one call), a tool's name (exactly one call to it), ``"none"`` (text only) or ``"auto"``;
    turns past the end are ``"auto"``. A task known to need tools in order requires them, and a turn
    that must answer forbids calls: with every turn ``"required"`` a run could never end. ``model``: the
    model every turn of the run goes to (empty: the engine's default). ``answer_turn``: a rendered system
    turn placed just before the assistant cue on every turn whose ``tool_choice`` is ``"none"`` (a turn
    that must answer in text), and only there: it is never stored in the thread. ``client_tools``: the
    names of the offered tools that the client runs, not the service: a turn that calls one ends the
    run (stop reason ``tool_calls``) with the turn's calls awaiting their results (``Outcome.awaiting``);
    the conversation goes on in a run whose first turn is their tool turn. ``request``: what the client
    asked in the API's own words, for the API to show back (a response's input items, its metadata);
    the loop never reads it.
    """

    run_id: str
    tenant: str
    thread_id: str
    prefix: str
    tools: tuple[ToolSpec, ...] = ()
    json_schema: dict[str, Any] | None = None
    limits: Limits = Limits()
    sampling: Sampling = Sampling()
    constrained: bool = False
    tool_choice: tuple[str, ...] = ()
    model: str = ""
    answer_turn: str = ""
    client_tools: tuple[str, ...] = ()
    request: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A run's state after its last acknowledged step; everything a resumed run needs.

    ``turns`` are the thread's rendered turns from ``window_start`` on (the part the prompt shows);
    ``repeats`` counts each distinct call signature, for the repeated-call limit.
    """

    deadline: float
    step: int = 0
    turns: list[str] = field(default_factory=list)
    window_start: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    json_retries: int = 0
    repeats: dict[str, int] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def apply(self, commit: StepCommit) -> None:
        """Move on past ``commit``, as the store does when it acknowledges the step."""
        self.step = commit.step + 1
        self.turns.extend(commit.turns)
        self.window_start = commit.window_start
        self.prompt_tokens += commit.prompt_tokens
        self.completion_tokens += commit.completion_tokens
        self.json_retries = commit.json_retries
        for key, count in commit.repeats.items():
            self.repeats[key] = self.repeats.get(key, 0) + count


@dataclass(frozen=True)
class Outcome:
    """A run's end. ``awaiting`` (stop reason ``tool_calls``): the last turn's calls in call order, each
    the ``ToolResult`` of a call the service ran (or refused) or the ``ToolCall`` of one the client runs."""

    run_id: str
    stop_reason: StopReason
    output: str = ""
    value: Any = None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    awaiting: tuple[ToolCall | ToolResult, ...] = ()


@dataclass(frozen=True)
class StepCommit:
    """One acknowledged step, written atomically: the turns it appends, the token counts and call
    signature counts it adds (deltas), the window start and JSON retries it sets, and a small record.

    ``outcome`` is set on a run's last step (its answer, or a stop): the store writes the run's end with
    it, atomically, so that a run whose last step is acknowledged is never resumed to sample again (the
    loop calls ``finish`` only for a run that ends without a step to commit)."""

    step: int
    turns: tuple[str, ...]
    window_start: int
    prompt_tokens: int
    completion_tokens: int
    json_retries: int
    repeats: dict[str, int]
    record: dict[str, Any]
    outcome: Outcome | None = None


@dataclass(frozen=True)
class CallSlot:
    """A tool call's place in the run's ledger.

    The entry is keyed by what was called: the step, ``digest`` (of the call's name and canonical
    arguments) and ``occurrence`` (how many identical calls the step ran before this one). So a step sampled
    again after a take-over replays a ledgered result only to the identical call, wherever it now stands,
    and a different call never receives another call's result: it runs as a new entry. ``index`` is the
    call's position in the step's stream: events name it, and the position's last entry is kept so that a
    call replaced at a position is reported (a ``call_superseded`` event).
    """

    step: int
    index: int
    digest: str
    occurrence: int = 0

    @property
    def entry(self) -> str:
        return f"{self.step}:{self.digest}:{self.occurrence}"

    @property
    def position(self) -> str:
        return f"{self.step}@{self.index}"


@dataclass(frozen=True)
class Interrupted:
    """The ledger shows the call started before a crash but never finished: its effect is unknown."""

    call: ToolCall


class RunStore(Protocol):
    """Durable run memory. ``begin_call`` returns the ledgered result of the identical call (``CallSlot``)
    that completed before a crash, ``Interrupted`` for one that started and never finished, or ``None``:
    the caller now owns the call and reports its result with ``end_call``; ``delta`` (the model's text
    since the last ``delta`` event) is written first, as an event of its own, in the same write. A store
    shared by workers fences every write by the run's lease (``LeaseLostError`` when this worker no longer
    holds it)."""

    async def commit(self, spec: RunSpec, step: StepCommit) -> None: ...

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None: ...

    async def end_call(self, spec: RunSpec, slot: CallSlot, result: ToolResult) -> None: ...

    async def emit(self, spec: RunSpec, kind: EventKind, data: dict[str, Any]) -> None: ...

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None: ...
