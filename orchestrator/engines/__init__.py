"""Chat engines behind the ``ChatEngine`` port: scripted (tests, load benchmarks), OpenAI-compatible, and a
model in this process (``LocalEngine``; torch is imported only when a model is loaded)."""

from orchestrator.engines.local import LocalEngine
from orchestrator.engines.openai import OpenAICompletionsEngine
from orchestrator.engines.scripted import Latency, ScriptedEngine

__all__ = ["Latency", "LocalEngine", "OpenAICompletionsEngine", "ScriptedEngine"]
