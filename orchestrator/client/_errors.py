"""The client's failures: one base, and a class per way a request can fail.

::

    CaduceusError                    anything this client raises on purpose
    ├── APIError                     the service answered with an error: ``status``, ``code``, ``message``
    │   ├── BadRequestError          400 or 422: the request is wrong (``param`` names the field, if known)
    │   ├── AuthenticationError      401: no API key, or an unknown one
    │   ├── NotFoundError            404: no such run (or another tenant's)
    │   ├── ConflictError            409: the thread is busy, an Idempotency-Key was used with another body
    │   ├── RateLimitError           429: too many requests; ``retry_after`` seconds
    │   └── InternalServerError      5xx: the service (or its store) failed; retrying may help
    └── APIConnectionError           no answer: refused, reset, or a stream lost for good
        └── APITimeoutError          the service did not answer in time
"""

from __future__ import annotations


class CaduceusError(Exception):
    """The base of every error this client raises."""


class APIError(CaduceusError):
    """The service answered with an error envelope (or, from something in front of it, a bare error)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status, self.code, self.message, self.param = status, code, message, param


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class RateLimitError(APIError):
    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(status, code, message, param)
        self.retry_after = retry_after


class InternalServerError(APIError):
    pass


class APIConnectionError(CaduceusError):
    """The service did not answer."""


class APITimeoutError(APIConnectionError):
    """The service did not answer in time."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
}


def api_error(status: int, code: str, message: str, param: str | None, retry_after: str | None) -> APIError:
    """The error for an answer with ``status``."""
    if status == 429:
        return RateLimitError(status, code, message, param, float(retry_after or 1))
    if status >= 500:
        return InternalServerError(status, code, message, param)
    return _BY_STATUS.get(status, APIError)(status, code, message, param)
