// The run inspector: plain JavaScript over the REST API, no build step. The API key is kept in this tab's
// sessionStorage and sent as an Authorization header; it never goes into a URL. A run's events are read
// with fetch() (EventSource cannot send headers) and parsed as Server-Sent Events here.
"use strict";

const state = { key: sessionStorage.getItem("caduceus-key") || "", run: null, stream: null, poll: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function say(text) {
  $("status").textContent = text;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) {
      /* not the API's error envelope */
    }
    throw new Error(message);
  }
  return response;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function statusCell(status) {
  return el("span", status.replace("_", " "), { class: `st st-${status}` });
}

function runRow(run) {
  const row = el("tr", null, { "data-run": run.id });
  const short = run.id.length > 16 ? `${run.id.slice(0, 16)}…` : run.id;
  const open = el("button", short, { type: "button", title: run.id, "aria-label": `Open run ${run.id}` });
  open.addEventListener("click", () => openRun(run.id));
  const first = el("td");
  first.append(open);
  row.append(first, el("td"), el("td"), el("td"), el("td"));
  return row;
}

function fillRow(row, run) {
  const cells = row.children;
  cells[1].replaceChildren(statusCell(run.status));
  cells[2].textContent = run.model;
  cells[3].textContent = run.steps;
  cells[4].textContent = when(run.created_at);
  row.classList.toggle("selected", run.id === state.run);
}

async function loadRuns() {
  try {
    const page = await (await api("/v1/runs?limit=50")).json();
    const body = $("runs").tBodies[0];
    const rows = new Map([...body.rows].map((row) => [row.dataset.run, row]));
    page.data.forEach((run, index) => {
      const row = rows.get(run.id) || runRow(run);
      fillRow(row, run);
      if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
    });
    $("runs-panel").hidden = false;
    say(`${page.data.length} runs (refreshed ${new Date().toLocaleTimeString()})`);
  } catch (error) {
    say(`Could not list runs: ${error.message}`);
  }
}

function traceLink(traceId) {
  if (!traceId) return el("span", "none");
  const base = localStorage.getItem("caduceus-trace-base") || "";
  if (!base) return el("code", traceId);
  const link = el("a", traceId, { href: base + traceId, target: "_blank", rel: "noopener" });
  return link;
}

function showFacts(run) {
  const facts = $("run-facts");
  const rows = [
    ["Status", statusCell(run.status)],
    ["Model", run.model],
    ["Thread", run.thread_id],
    ["Steps", run.steps],
    ["Tokens", `${run.usage.prompt_tokens} in, ${run.usage.completion_tokens} out`],
    ["Trace", traceLink(run.trace_id)],
  ];
  if (run.stop_reason) rows.push(["Stop reason", run.stop_reason]);
  if (run.error) rows.push(["Error", run.error]);
  if (run.output) rows.push(["Answer", run.output]);
  facts.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dd = el("dd");
      dd.append(value instanceof Node ? value : document.createTextNode(String(value)));
      return [el("dt", name), dd];
    }),
  );
}

async function refreshRun() {
  if (!state.run) return;
  try {
    showFacts(await (await api(`/v1/runs/${encodeURIComponent(state.run)}`)).json());
  } catch (error) {
    say(`Could not read run ${state.run}: ${error.message}`);
  }
}

const calls = new Map();

function onEvent(kind, data) {
  if (kind === "delta") {
    $("text").textContent += data.text;
  } else if (kind === "tool_call") {
    const item = el("li", null, { "data-call": data.call_id });
    item.append(el("strong", data.name), document.createTextNode(" "));
    item.append(el("code", JSON.stringify(data.arguments)), el("div", "running ...", { class: "result" }));
    calls.set(data.call_id, item);
    $("calls").append(item);
  } else if (kind === "tool_result") {
    const item = calls.get(data.call_id);
    const result = item ? item.querySelector(".result") : null;
    if (result) {
      result.className = `result ${data.ok ? "ok" : "err"}`;
      result.textContent = data.ok ? `-> ${data.content}` : `error ${data.error.type}: ${data.error.message}`;
    }
  } else if (kind === "step") {
    $("text").textContent += "\n";
    addStep(data);
    refreshRun();
  } else if (kind === "finished" || kind === "failed") {
    refreshRun();
  }
}

function addStep(step) {
  const scale = 200; // pixels per second, capped per bar
  const bar = (cls, seconds) =>
    el("span", null, { class: `bar ${cls}`, style: `width:${Math.min(400, Math.max(2, seconds * scale))}px` });
  const item = el("li");
  const label = `step ${step.step}: model ${step.model_s.toFixed(3)} s, tools ${step.tools_s.toFixed(3)} s`;
  const calls = step.calls.length ? ` (${step.calls.join(", ")})` : "";
  item.append(bar("model", step.model_s), bar("tools", step.tools_s), el("span", label + calls));
  $("timeline").append(item);
}

async function follow(runId, signal) {
  const response = await api(`/v1/runs/${encodeURIComponent(runId)}/events`, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = {};
      for (const line of frame.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const at = line.indexOf(":");
        fields[line.slice(0, at)] = line.slice(at + 1).replace(/^ /, "");
      }
      if (fields.event && fields.data) onEvent(fields.event, JSON.parse(fields.data));
    }
  }
}

async function openRun(runId) {
  if (state.stream) state.stream.abort();
  state.run = runId;
  state.stream = new AbortController();
  calls.clear();
  for (const id of ["text", "calls", "timeline", "thread"]) $(id).replaceChildren();
  $("run-title").textContent = `Run ${runId}`;
  $("run-panel").hidden = false;
  $("run-title").focus();
  await refreshRun();
  loadRuns();
  follow(runId, state.stream.signal).catch((error) => {
    if (error.name !== "AbortError") say(`The event stream stopped: ${error.message}`);
  });
}

async function loadThread() {
  const facts = [...$("run-facts").children];
  const index = facts.findIndex((node) => node.textContent === "Thread");
  const threadId = index >= 0 ? facts[index + 1].textContent : "";
  try {
    const found = await (await api(`/v1/threads/${encodeURIComponent(threadId)}/messages`)).json();
    $("thread").replaceChildren(
      ...found.data.map((message) => {
        const item = el("li");
        item.append(el("strong", message.role), el("pre", message.content));
        return item;
      }),
    );
  } catch (error) {
    say(`Could not read the thread: ${error.message}`);
  }
}

function connect(event) {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("caduceus-key", state.key);
  localStorage.setItem("caduceus-trace-base", $("trace-base").value.trim());
  loadRuns();
  if (state.poll) clearInterval(state.poll);
  state.poll = setInterval(() => {
    loadRuns();
  }, 2000);
}

$("connect").addEventListener("submit", connect);
$("load-thread").addEventListener("click", loadThread);
$("trace-base").value = localStorage.getItem("caduceus-trace-base") || "";
if (state.key) {
  $("key").value = state.key;
  $("connect").requestSubmit();
}
