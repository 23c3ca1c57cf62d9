"""The REST API: ``create_app(store, keys=...)`` builds the FastAPI application (see ``app``)."""

from orchestrator.api.app import create_app
from orchestrator.api.auth import ApiKeysError, parse_api_keys

__all__ = ["ApiKeysError", "create_app", "parse_api_keys"]
