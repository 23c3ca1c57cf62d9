"""The attribute, span and metric names of Caduceus's telemetry: the OpenTelemetry GenAI semantic
conventions where they name a thing, ``caduceus.*`` for the rest."""

from __future__ import annotations

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
CONVERSATION = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_TOKEN = "gen_ai.latency.time_to_first_token"  # as vLLM's own request spans name it
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
RUN_ID = "caduceus.run.id"
TENANT = "caduceus.tenant"
STOP_REASON = "caduceus.run.stop_reason"
SANDBOX_COLD = "caduceus.sandbox.cold"

#: Spans (besides ``invoke_agent``, ``chat {model}`` and ``execute_tool {name}``): the wait in the run
#: queue, the LLM replica's side of a model call (named as vLLM names its own), the tool worker's side of
#: a tool call.
QUEUE_SPAN = "queue_wait"
LLM_REQUEST_SPAN = "llm_request"
SANDBOX_SPAN = "sandbox"

OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
