"""A failed run's client reads a stable code and sentence, never the exception's own text."""

from __future__ import annotations

from orchestrator.errors import (
    UNREADABLE_RUN,
    ContextOverflowError,
    EngineError,
    LeaseLostError,
    UnreadableRunError,
    failure_message,
)


def test_each_kind_of_failure_has_a_stable_message_without_the_exceptions_text() -> None:
    secret = "postgres://admin:hunter2@10.0.0.7/db"
    cases = {
        UnreadableRunError(secret): UNREADABLE_RUN,
        ContextOverflowError(secret): "context_overflow: ",
        EngineError(secret): "engine_error: ",
        LeaseLostError(secret): "store_error: ",
        KeyError(secret): "internal_error: ",
        RuntimeError(secret): "internal_error: ",
    }
    for exc, start in cases.items():
        message = failure_message(exc)
        assert message.startswith(start) and secret not in message and "Error" not in message
