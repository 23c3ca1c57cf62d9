"""Chat engines behind the ``ChatEngine`` port: scripted (tests, load benchmarks), OpenAI-compatible, and a
model in this process (``LocalEngine``; torch is imported only when a model is loaded), and a router
that sends each run to the engine of its model (``ModelRouter``)."""

from orchestrator.engines.local import LocalEngine
from orchestrator.engines.openai import OpenAICompletionsEngine
from orchestrator.engines.routed import ModelRouter
from orchestrator.engines.scripted import Latency, ScriptedEngine

__all__ = ["Latency", "LocalEngine", "ModelRouter", "OpenAICompletionsEngine", "ScriptedEngine"]
