"""Chat engines behind the ``ChatEngine`` port: scripted (tests, load benchmarks) and OpenAI-compatible."""

from orchestrator.engines.openai import OpenAICompletionsEngine
from orchestrator.engines.scripted import Latency, ScriptedEngine

__all__ = ["Latency", "OpenAICompletionsEngine", "ScriptedEngine"]
