"""``POST /v1/responses``'s body, in OpenAI's Responses shape: pydantic at the edge only. Strict: a field the
Responses API does not define is refused, naming it. Input items and tools are plain objects here and are
read one by one (``response_input``, ``response_tools``), so that each refusal names the item at fault.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_ID = r"^[A-Za-z0-9_.-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionChoice(_Body):
    type: Literal["function"]
    name: str = Field(pattern=_NAME)


class McpChoice(_Body):
    type: Literal["mcp"]
    server_label: str
    name: str | None = Field(None, pattern=_NAME)


class TextFormatIn(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=_NAME)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormatIn | None = None
    verbosity: Literal["medium"] | None = None


class StreamOptionsIn(_Body):
    include_obfuscation: bool | None = None


class ResponseRequest(_Body):
    model: str | None = Field(None, max_length=128)
    input: str | list[dict[str, Any]] = Field(max_length=500)
    instructions: str | None = Field(None, max_length=100_000)
    tools: list[dict[str, Any]] | None = Field(None, max_length=64)
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | McpChoice | None = None
    max_tool_calls: int | None = Field(None, ge=1, le=1000)
    max_output_tokens: int | None = Field(None, ge=1, le=32_768, description="Most tokens per model turn")
    previous_response_id: str | None = Field(None, pattern=_ID)
    background: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    stream: bool | None = None
    stream_options: StreamOptionsIn | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = Field(None, max_length=256)
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class InputItems(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
