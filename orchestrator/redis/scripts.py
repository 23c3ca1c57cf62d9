"""The Lua scripts the Redis store runs: each is one atomic step on the server.

Plain text, but for the names a script shares with Python: ``$field:name`` is a field of a run's hash
(``record``, the codec's), ``$status:name`` a stored status and ``$event:name`` an event kind, each quoted
as Lua text and checked against its closed set when the module loads, so that a script can only name a
field, status or event that the Python side knows.

Every script that writes a run's state for a worker starts with the same fencing check: ARGV[1] is the
worker's id ("" for no fencing: one process owns every run it runs) and it must be the value of the run's
lease. A worker that lost its lease (another worker took the run over) writes nothing, atomically with the
check, so no stale worker can write over the live one.
"""

from __future__ import annotations

import re
from typing import get_args

from orchestrator.ports import EventKind
from orchestrator.records import StoredStatus
from orchestrator.redis.record import FIELDS

_NAMES = {
    "field": FIELDS,
    "status": frozenset(get_args(StoredStatus)),
    "event": frozenset(get_args(EventKind)),
}
_NAME = re.compile(r"\$([a-z]+):([a-z_]+)")


def lua(template: str) -> str:
    """The script, with each ``$field:``, ``$status:`` and ``$event:`` name quoted (``KeyError`` for a name
    that is not in its set)."""

    def quoted(found: re.Match[str]) -> str:
        space, name = found.group(1), found.group(2)
        if name not in _NAMES[space]:
            raise KeyError(f"{space} {name!r} is not one of ours")
        return f"'{name}'"

    return _NAME.sub(quoted, template)


# KEYS: run, thread, steps, events, repeats, lease, ledger.
# ARGV: worker (or "" for no fencing), step, window_start, d_prompt, d_completion, json_retries, record,
#       ttl, maxlen, number of turns, the run's outcome fields JSON ("" unless this is its last step), the
#       finished event's data, the turns..., then signature/count pairs.
# A run's last step finishes it in the same script: a run whose last step is in is never resumed.
COMMIT = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[1] then return 0 end
local step = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], $field:step) or '0') ~= step then return -1 end
local n = tonumber(ARGV[10])
for i = 13, 12 + n do redis.call('RPUSH', KEYS[2], ARGV[i]) end
for i = 13 + n, #ARGV, 2 do redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], $field:step, step + 1, $field:window_start, ARGV[3], $field:json_retries, ARGV[6])
redis.call('HSET', KEYS[1], $field:status, $status:running)
redis.call('HINCRBY', KEYS[1], $field:prompt_tokens, ARGV[4])
redis.call('HINCRBY', KEYS[1], $field:completion_tokens, ARGV[5])
redis.call('HINCRBY', KEYS[1], $field:turn_count, n)
redis.call('RPUSH', KEYS[3], ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'kind', $event:step, 'data', ARGV[7])
if ARGV[11] ~= '' then
  for k, v in pairs(cjson.decode(ARGV[11])) do redis.call('HSET', KEYS[1], k, v) end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'kind', $event:finished, 'data', ARGV[12])
end
for i = 1, 7 do if i ~= 6 then redis.call('EXPIRE', KEYS[i], ARGV[8]) end end
return 1
""")

# KEYS: run, events, lease. ARGV: worker, outcome fields JSON, event data, maxlen, ttl.
# A run finished already (by its last step's commit) is left as it is.
FINISH = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], $field:status) == $status:finished then return 1 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', $event:finished, 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
""")

# KEYS: lease, run, repeats. ARGV: worker ("" to read without taking the lease), lease ms, the prefix of
# the tenant's thread keys. Takes the run's lease (unless another worker holds it: {0}) and reads what
# running it needs, in one round trip: {1, the record's fields, the thread's turns from the run's window,
# the repeats, whether the record names its thread}.
START = lua("""
if ARGV[1] ~= '' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local thread = redis.call('HGET', KEYS[2], $field:thread)
local window = redis.call('HGET', KEYS[2], $field:window_start)
local turns = {}
if thread and window then turns = redis.call('LRANGE', ARGV[3] .. thread, tonumber(window), -1) end
return {1, redis.call('HGETALL', KEYS[2]), turns, redis.call('HGETALL', KEYS[3]), thread and 1 or 0}
""")

RELEASE = lua("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: ledger, events, lease. ARGV: worker, entry, position, started marker, ttl, tool_call event data,
# maxlen, the data of a delta event to add first ("" for none: the model's text up to this call).
# The ledger entry is keyed by what was called (step, digest of the call, occurrence); the position field
# ("{step}@{index}") says which entry the step's call at that index last was. Returns {'lost'}, {'had',
# entry value} (the call started before, or finished: a replay), or {'new'} (the caller runs the call). A new
# call at a position that held a different call (the step was sampled again after a take-over and differs)
# is reported with a call_superseded event naming the superseded call and its state.
BEGIN_CALL = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'lost'} end
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'kind', $event:delta, 'data', ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
local before = redis.call('HGET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[2])
local had = redis.call('HGET', KEYS[1], ARGV[2])
if had then return {'had', had} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'kind', $event:tool_call, 'data', ARGV[6])
if before and before ~= ARGV[2] then
  local old = redis.call('HGET', KEYS[1], before)
  local report = cjson.decode(ARGV[6])
  report['arguments'] = nil
  report['superseded'] = {entry = before}
  if old then
    local ok, value = pcall(cjson.decode, old)
    if ok then
      report['superseded']['name'] = value['name']
      report['superseded']['state'] = value['kind'] == 'tool_result' and 'done' or 'started'
    end
  end
  local data = cjson.encode(report)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'kind', $event:call_superseded, 'data', data)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {'new'}
""")

# KEYS: ledger, events, lease. ARGV: worker, entry, result, event data, maxlen.
END_CALL = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'kind', $event:tool_result, 'data', ARGV[4])
return 1
""")

# KEYS: events, lease. ARGV: worker, kind, data, maxlen.
EMIT = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'kind', ARGV[2], 'data', ARGV[3])
return 1
""")

# KEYS: run, events, lease. ARGV: worker, error, finished_at, event data, maxlen, ttl.
FAIL = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], $field:status, $status:failed, $field:error, ARGV[2], $field:finished_at, ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'kind', $event:failed, 'data', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
""")

# KEYS: queue, lease. ARGV: worker, group, entry. The run is finished (or was already): its entry leaves the
# queue and its lease is released, only while this worker holds the lease.
DONE = lua("""
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1
""")

# KEYS: lease, queue, cancel. ARGV: worker, lease ms, group, entry. Renews a lease this worker holds and
# resets its entry's idle time in the group (so no worker takes it over); returns {held, cancel requested}.
# The entry's claim is best effort (pcall): a queue that lost its group (Redis restarted without
# persistence) must not stop the lease from being renewed.
HEARTBEAT = lua("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.pcall('XCLAIM', KEYS[2], ARGV[3], ARGV[1], 0, ARGV[4], 'JUSTID')
return {1, redis.call('EXISTS', KEYS[3])}
""")

# KEYS: run, cancel, lease, events. ARGV: outcome fields JSON, event data, maxlen, ttl.
# Returns the status after, or nil when there is no run. Only a queued run that no worker holds (no
# lease) is finished here.
CANCEL = lua("""
if redis.call('HEXISTS', KEYS[1], $field:spec) == 0 then return false end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
local status = redis.call('HGET', KEYS[1], $field:status)
if status == $status:queued and redis.call('EXISTS', KEYS[3]) == 0 then
  local fields = cjson.decode(ARGV[1])
  for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'kind', $event:finished, 'data', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  return $status:finished
end
return status
""")

# KEYS: thread, run, the thread's run (claim), the tenant's run index, queue, the idempotency key (any key
# when there is none). ARGV: run id, tenant, ttl, now, thread must exist ("1"/"0"), the idempotency
# binding JSON ("" for none), its ttl, the prefix of the tenant's run keys, index cutoff score, index
# size, enqueue ("1"/"0"), claim the thread ("1"/"0"), the run the thread's latest must be ("" for any),
# number of turns (at least one), the turns..., then the record's field/value pairs.
# A whole submission, atomically: replays an idempotency key bound already ({'idem', binding}), refuses an
# unknown thread ({'no_thread'}), a thread whose latest run is not the one it must follow ({'moved',
# latest}) or, when claiming, a thread whose run is still queued or running ({'busy', run}); else appends
# the turns, writes the record (with where the run's own turns will start), claims the thread (for as
# long as the record lasts), indexes and queues the run and binds the key ({'ok', where its turns start}).
SUBMIT = lua("""
if ARGV[6] ~= '' then
  local held = redis.call('GET', KEYS[6])
  if held then return {'idem', held} end
end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {'no_thread'} end
if ARGV[13] ~= '' then
  local latest = redis.call('GET', KEYS[3])
  if latest ~= ARGV[13] then return {'moved', latest or ''} end
end
if ARGV[12] == '1' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[1] then
    local status = redis.call('HGET', ARGV[8] .. holder, $field:status)
    if status == $status:queued or status == $status:running then return {'busy', holder} end
  end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
end
local n = tonumber(ARGV[14])
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 15, 14 + n))
redis.call('HSET', KEYS[2], unpack(ARGV, 15 + n, #ARGV))
redis.call('HSET', KEYS[2], $field:first_turn, length)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[9])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[10]) - 1)
for i = 1, 4 do if i ~= 3 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end end
if ARGV[11] == '1' then redis.call('XADD', KEYS[5], '*', 'tenant', ARGV[2], 'run', ARGV[1]) end
if ARGV[6] ~= '' then redis.call('SET', KEYS[6], ARGV[6], 'EX', ARGV[7]) end
return {'ok', length}
""")

# KEYS: run, lease. ARGV: the prefix of the tenant's thread keys.
# A run's record and the turns it committed itself, in one round trip: {the record's fields, whether a
# worker holds it, the turns}.
RUN_TURNS = lua("""
local thread = redis.call('HGET', KEYS[1], $field:thread)
local first = tonumber(redis.call('HGET', KEYS[1], $field:first_turn) or '0')
local count = tonumber(redis.call('HGET', KEYS[1], $field:turn_count) or '0')
local turns = {}
if thread and count > 0 then turns = redis.call('LRANGE', ARGV[1] .. thread, first, first + count - 1) end
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), turns}
""")

# KEYS: run, steps, events, ledger, repeats, cancel, lease, the tenant's run index. ARGV: run id.
# Deletes a run that is over (its thread stays: other runs continue it): 'deleted'; 'busy' for a run
# still queued or running; nil when there is no such run.
DELETE = lua("""
local status = redis.call('HGET', KEYS[1], $field:status)
if not status then return false end
if status == $status:queued or status == $status:running then return 'busy' end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[1])
return 'deleted'
""")

# KEYS: a tenant's run index. ARGV: the run id to list after ("" for the newest), count.
# Returns up to count run ids, newest first, or nil when the run to list after is not in the index.
# One script, so that a run submitted between finding the cursor and reading the page shifts nothing.
LIST_RUNS = lua("""
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if not rank then return false end
  start = rank + 1
end
return redis.call('ZREVRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
""")
