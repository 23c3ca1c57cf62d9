"""``POST /v1/chat/completions``'s bodies, in OpenAI's shape for text models: pydantic at the edge only.

A request is strict: a field OpenAI does not define is refused, naming the field, and so is one it defines
that a Hermes text model here cannot honour (``n`` above 1, log probabilities, audio, penalties...): never
silence. Message contents are a string or a list of parts, checked where they are turned into turns
(``chat_prompt``), so that an image part is refused with a sentence, not a union's validation dump.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
Content = str | list[dict[str, Any]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemIn(_Body):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserIn(_Body):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCallIn(_Body):
    name: str = Field(max_length=64)
    arguments: str = Field(max_length=200_000, description="The call's arguments, a JSON object as text")


class ToolCallIn(_Body):
    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class AssistantIn(_Body):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=64)
    name: str | None = None
    refusal: str | None = None
    # What OpenAI's own answers carry, taken back only empty (an assistant message replayed as received).
    audio: None = None
    function_call: None = None
    annotations: list[Any] | None = None


class ToolIn(_Body):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(max_length=128)


MessageIn = Annotated[SystemIn | UserIn | AssistantIn | ToolIn, Field(discriminator="role")]


class FunctionIn(_Body):
    name: str = Field(pattern=_NAME)
    description: str = Field("", max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = Field(None, description="Decode the arguments under the schema")


class ToolDefinition(_Body):
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(_Body):
    name: str = Field(pattern=_NAME)


class NamedChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaIn(_Body):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaIn


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(_Body):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(_Body):
    model: str = Field(max_length=128)
    messages: list[MessageIn] = Field(min_length=1, max_length=500)
    tools: list[ToolDefinition] | None = Field(None, max_length=64)
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    stop: str | list[str] | None = Field(None, max_length=4)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="The end user, for the client's own records")
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # Defined by OpenAI, honoured only at their neutral value here (else a 400 that names them).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
