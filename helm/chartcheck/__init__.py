"""The chart check's parts: the RayService's promises (rayservice) and the values docs (values_doc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[1] / "caduceus"

Obj = dict[str, Any]


class CheckError(Exception):
    """A check failed; the message says which and why."""
