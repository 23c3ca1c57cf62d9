"""The Python client of Caduceus's runs API (``/v1/runs``): submit a run, follow its events (a dropped
stream is resumed with ``Last-Event-ID``), wait for it, cancel it, list runs. Sync (``Client``) and async
(``AsyncClient``), typed, on httpx; it imports nothing of the service.

    from orchestrator.client import Client

    with Client() as client:  # $CADUCEUS_URL and $CADUCEUS_API_KEY
        run = client.submit("What is 17 * 23?", tools=["calculator"])
        for event in client.events(run.id):
            print(event.kind, event.data)
        print(client.wait(run.id).output)

For a model (the client runs its tools), use any OpenAI client on ``/v1/chat/completions``; for an agent
in OpenAI's Responses shape, ``/v1/responses``.
"""

from orchestrator.client._async import AsyncClient
from orchestrator.client._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CaduceusError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
)
from orchestrator.client._sync import Client
from orchestrator.client._types import Event, Message, Run, RunPage, Tool, Usage

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "CaduceusError",
    "Client",
    "ConflictError",
    "Event",
    "InternalServerError",
    "Message",
    "NotFoundError",
    "RateLimitError",
    "Run",
    "RunPage",
    "Tool",
    "Usage",
]
