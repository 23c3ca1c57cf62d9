"""Exceptions raised by ``orchestrator``: our faults and the infrastructure's, never the model's.

What the model can fix (a malformed call, invalid arguments, a JSON answer that does not match the schema,
a tool that failed) goes back to it as a tool result or a turn, and shows up as an event. What is a
configuration error or an outside system failing raises one of these::

    OrchestratorError
    ├── EngineError           the chat engine failed (HTTP error, broken stream)
    │   └── ContextOverflowError  the engine refused the prompt as too long (the loop compacts before this)
    ├── StoreError            the run store is unusable or holds something unexpected
    │   ├── StoreUnavailableError  Redis is unreachable, loading or stalled: worth retrying later
    │   ├── RunNotFoundError  no run record under that id
    │   ├── UnreadableRunError  a run record that cannot be read back (it must fail alone, never loop)
    │   └── LeaseLostError    another worker owns the run now; this worker must drop it
    ├── UnhealthyError        one of a worker's loops is dead (its health check says so)
    └── ScriptError           a ScriptedEngine was used differently from its script
"""


class OrchestratorError(Exception):
    """Base of every exception raised by the orchestrator package."""


class EngineError(OrchestratorError):
    """The chat engine failed to produce a completion."""


class ContextOverflowError(EngineError):
    """The engine refused the prompt because it exceeds the model's context window."""


class StoreError(OrchestratorError):
    """The run store failed or holds data we cannot read."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached right now (connection lost, timed out, loading): a retry may succeed."""


class RunNotFoundError(StoreError):
    """There is no run record under the given id."""


class UnreadableRunError(StoreError):
    """A run's record cannot be decoded (or, at submission, would not decode once stored). ``status`` is
    the record's status where it could be read."""

    def __init__(self, message: str, *, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class LeaseLostError(StoreError):
    """The run's lease belongs to another worker: this worker's view of the run is stale."""


class UnhealthyError(OrchestratorError):
    """A worker loop ended (its error is the cause): the worker no longer takes, renews or relays runs."""


class ScriptError(OrchestratorError):
    """A ScriptedEngine ran out of script, or was asked something its script does not cover."""


UNREADABLE_RUN = "unreadable_run: this run's stored record cannot be read, so it was not run"


def failure_message(exc: BaseException) -> str:
    """What the client of a failed run reads: a stable code and sentence per kind of failure. The
    exception's own text can hold internals (paths, hosts, a server's reply): it goes to the logs only."""
    if isinstance(exc, UnreadableRunError):
        return UNREADABLE_RUN
    if isinstance(exc, ContextOverflowError):
        return "context_overflow: the conversation no longer fits the model's context window"
    if isinstance(exc, EngineError):
        return "engine_error: the model failed to answer; try the run again later"
    if isinstance(exc, StoreError):
        return "store_error: the run store failed; try the run again later"
    return "internal_error: the run failed on the service's side (its logs have the details)"
