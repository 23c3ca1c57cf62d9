"""The REST API's bodies: pydantic at the edge only. Requests are strict (unknown fields are refused, so a
misspelt limit is an error, not a silent default); responses are plain models for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.records import RunStatus

_ID = r"^[A-Za-z0-9_.-]{1,128}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class RunLimits(_Strict):
    max_steps: int | None = Field(None, ge=1, le=1000)
    deadline_s: float | None = Field(None, gt=0, le=24 * 3600)
    max_tokens: int | None = Field(None, ge=1, le=32_768, description="Most tokens per model turn")


class RunRequest(_Strict):
    input: str | list[Message] = Field(description="The user's text, or a conversation ending in a user turn")
    thread_id: str | None = Field(None, pattern=_ID, description="Continue this conversation")
    model: str | None = Field(None, max_length=128)
    tools: list[str] = Field(default_factory=list, max_length=64)
    system: str | None = Field(None, max_length=100_000)
    json_schema: dict[str, Any] | None = None
    limits: RunLimits = RunLimits()
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; 0 is greedy")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Sampling seed, for repeatable runs")
    constrained: bool | None = Field(
        None,
        description="Decode every turn under a grammar so tool calls (and a JSON-mode answer) are valid by "
        "construction; omitted: the service's default for its engine",
    )
    tool_choice: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="With constrained decoding, what turn N may do: auto, required, none or a tool name",
    )
    answer_instruction: str | None = Field(
        None,
        max_length=2000,
        description="A system turn shown to the model just before each turn whose tool_choice is none (a "
        "turn that must answer in text), e.g. how to word the answer; never stored in the thread",
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Run(BaseModel):
    object: Literal["run"] = "run"
    id: str
    status: RunStatus
    thread_id: str
    model: str
    created_at: float
    finished_at: float | None = None
    stop_reason: str | None = None
    output: str | None = None
    value: Any = None
    error: str | None = None
    steps: int = 0
    usage: Usage
    trace_id: str | None = Field(None, description="The run's trace (W3C trace id, 32 hex digits)")


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Run]
    has_more: bool = Field(description="More runs follow: ask again with after set to the last run's id")


class ThreadMessage(BaseModel):
    role: str
    content: str


class ThreadMessages(BaseModel):
    object: Literal["list"] = "list"
    thread_id: str
    data: list[ThreadMessage]


class Tool(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class ToolList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Tool]


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "caduceus"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]
