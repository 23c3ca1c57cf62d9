"""The Lua scripts that ``redis_store`` runs: each is one atomic step on the server.

Plain text only; ``redis_store`` is the one module that talks to Redis.
"""

# KEYS: run, thread, steps, events, repeats, lease, ledger.
# ARGV: worker (or "" for no fencing), step, window_start, d_prompt, d_completion, json_retries, record,
#       ttl, maxlen, number of turns, the turns..., then signature/count pairs.
COMMIT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[1] then return 0 end
local step = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], 'step') or '0') ~= step then return -1 end
local n = tonumber(ARGV[10])
for i = 11, 10 + n do redis.call('RPUSH', KEYS[2], ARGV[i]) end
for i = 11 + n, #ARGV, 2 do redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'step', step + 1, 'window_start', ARGV[3], 'json_retries', ARGV[6])
redis.call('HSET', KEYS[1], 'status', 'running')
redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[5])
redis.call('RPUSH', KEYS[3], ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'kind', 'step', 'data', ARGV[7])
for i = 1, 7 do if i ~= 6 then redis.call('EXPIRE', KEYS[i], ARGV[8]) end end
return 1
"""

# KEYS: run, events, lease. ARGV: worker, outcome fields JSON, event data, maxlen, ttl.
FINISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'finished', 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: lease. ARGV: worker, lease ms. Renew only a lease we hold.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: ledger, events. ARGV: field, ttl, event data, maxlen. Marks a call started unless the ledger has
# it (and tells the event stream the call started); returns what it had.
BEGIN_CALL = """
local had = redis.call('HGET', KEYS[1], ARGV[1])
if not had then
  redis.call('HSET', KEYS[1], ARGV[1], '{"state":"started"}')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'tool_call', 'data', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return had
"""

# KEYS: ledger, events. ARGV: field, result, event data, maxlen.
END_CALL = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'tool_result', 'data', ARGV[3])
return 1
"""

# KEYS: run, cancel, lease, events. ARGV: outcome fields JSON, event data, maxlen, ttl.
# Returns the status after, or nil when there is no run. Only a queued run that no worker holds (no
# lease) is finished here.
CANCEL = """
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return false end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' and redis.call('EXISTS', KEYS[3]) == 0 then
  local fields = cjson.decode(ARGV[1])
  for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'finished', 'data', ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  return 'finished'
end
return status
"""

# KEYS: an idempotency key. ARGV: run id. Deletes the binding only while it still names that run.
FORGET = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['run'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: a tenant's run index. ARGV: the run id to list after ("" for the newest), count.
# Returns up to count run ids, newest first, or nil when the run to list after is not in the index.
# One script, so that a run submitted between finding the cursor and reading the page shifts nothing.
LIST_RUNS = """
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if not rank then return false end
  start = rank + 1
end
return redis.call('ZREVRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""
