"""Chat engines behind the ``ChatEngine`` port: scripted (tests, load benchmarks), OpenAI-compatible (any
``/v1/completions`` server), and a router that sends each run to the engine of its model
(``ModelRouter``). The service's own engine, vLLM through Ray Serve LLM, is ``deploy.serve_engine``."""

from orchestrator.engines.openai import OpenAICompletionsEngine
from orchestrator.engines.routed import ModelRouter
from orchestrator.engines.scripted import Latency, ScriptedEngine

__all__ = ["Latency", "ModelRouter", "OpenAICompletionsEngine", "ScriptedEngine"]
