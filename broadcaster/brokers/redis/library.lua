#!lua name=broadcaster
-- broadcaster's Redis Function library, loaded by every node at start (FUNCTION LOAD REPLACE).
-- Placeholders in double braces are filled from the node's settings.
--
-- FCALL sse_publish 1 <channel> <data> [<event> [<idempotency-key>]]  ->  "<ms>-<seq>"
-- Atomically: assign the next id of the one global sequence, append to the channel's
-- history stream (with the channel's previous id, for gap detection), trim, refresh the
-- expiry, and PUBLISH the envelope that carries the id to every node.
-- With an idempotency key (pass "" as the event for none), a repeat of the key on the
-- same channel within the window answers the first publish's id and publishes nothing.

local PREFIX = "{{prefix}}"
local MAXLEN = {{maxlen}}
local TTL = {{ttl}}
local IDEMPOTENCY_WINDOW_MS = {{idempotency_window_ms}}
local IDEMPOTENCY_MAX_KEYS = {{idempotency_max_keys}} -- per channel and window
local META = PREFIX .. "meta"
-- Failovers. The sequence is advanced by one primary at a time, which META names by its
-- replication id. A server with another replication id (a promoted replica, a restart)
-- may lack the tail the old primary published and never replicated: its ids jump ahead
-- (JUMP in seq, MARGIN_MS in ms: more than any replication lag), so none can name a lost
-- message or sort before one, and GAPS records the range ("<after>|<before>|<seen>") for
-- resumes to tell clients what may be lost there. Reading the replication id (INFO)
-- costs more than a publish, so it happens at most every CHECK_MS. When it last did is
-- this server's own memory (`checked_at`, reset whenever the library is loaded): no key,
-- so nothing of it reaches a replica, whose clock may be behind, in a full sync.
local GAPS = PREFIX .. "gaps"
local JUMP = 1000000
local MARGIN_MS = 10000
local CHECK_MS = 100

local function id_of(ms, seq)
  return string.format("%d-%d", ms, seq)
end

local function take_over(now)
  local meta = redis.call("HMGET", META, "ms", "seq")
  if meta[2] == false then
    return -- a fresh sequence: nothing published before, nothing to lose
  end
  local last_ms, last_seq = tonumber(meta[1]), tonumber(meta[2])
  -- MARGIN_MS past both this server's clock and its last id: a second take-over, on a
  -- replica the first one never reached, starts after every id the first issued (they
  -- were at most MARGIN_MS past an earlier clock), instead of issuing the same ones.
  local ms = math.max(now, last_ms) + MARGIN_MS
  local seq = last_seq + JUMP
  redis.call("HSET", META, "ms", string.format("%d", ms), "seq", string.format("%d", seq - 1))
  local after = id_of(last_ms, last_seq)
  redis.call("RPUSH", GAPS, after .. "|" .. id_of(ms, seq) .. "|" .. after)
  redis.call("LTRIM", GAPS, -32, -1)
end

local checked_at = nil

local function check_primary(now)
  if checked_at and now >= checked_at and now - checked_at < CHECK_MS then
    return
  end
  local replid = string.match(redis.call("INFO", "replication"), "master_replid:(%w+)")
  local known = redis.call("HGET", META, "replid")
  if known ~= replid then
    if known then
      take_over(now)
    end
    redis.call("HSET", META, "replid", replid)
  end
  checked_at = now
end

local function now_ms()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function sse_publish(keys, args)
  local channel, data, event, key = keys[1], args[1], args[2] or "", args[3] or ""
  if channel == nil or data == nil then
    return redis.error_reply(
      "ERR usage: FCALL sse_publish 1 <channel> <data> [<event> [<idempotency-key>]]")
  end
  if #channel > 200 or not (string.match(channel, "^[%w%-_%.:@/=]+$")
      or string.match(channel, "^[%w%-_%.:@/=]*{[%w%-_%.:@/=]+}[%w%-_%.:@/=]*$")) then
    return redis.error_reply(
      "ERR channel name must be 1-200 of letters, digits and - _ . : @ / =, and at most one {tag}")
  end
  if string.find(event, "[\r\n%z]") then
    return redis.error_reply("ERR event must not contain CR, LF or NUL")
  end
  local remembered = nil
  if key ~= "" then
    if #key > 255 or not string.match(key, "^[%w%-_%.:@/=+]+$") then
      return redis.error_reply(
        "ERR idempotency key must be 1-255 of letters, digits and - _ . : @ / = +")
    end
    -- Neither channels nor keys contain a space: one key per (channel, idempotency key).
    remembered = PREFIX .. "idem:" .. channel .. " " .. key
    local first = redis.call("GET", remembered)
    if first then
      -- A repeat writes nothing new, yet a WAIT after it must cover the first publish:
      -- WAIT counts replicas past this connection's own last write, which a connection
      -- that only retried never made. Rewriting the key (same value, same expiry) is a
      -- write after the first publish in the replication stream, so it covers it.
      redis.call("SET", remembered, first, "KEEPTTL")
      return first
    end
    -- A bound on what keys may cost: a counter per channel, for one window from its first.
    local counted = PREFIX .. "idemcount:" .. channel
    local keys = redis.call("INCR", counted)
    if keys == 1 then
      redis.call("PEXPIRE", counted, IDEMPOTENCY_WINDOW_MS)
    end
    if keys > IDEMPOTENCY_MAX_KEYS then
      return redis.error_reply("ERR {{key_limit_reason}}")
    end
  end
  local ms = now_ms()
  check_primary(ms)
  local meta = redis.call("HMGET", META, "ms", "epoch")
  if meta[2] == false then
    redis.call("HSET", META, "epoch", string.format("%d", ms))
  end
  local last_ms = tonumber(meta[1]) or 0
  if ms < last_ms then
    ms = last_ms -- the clock went back: ids must not
  end
  local seq = redis.call("HINCRBY", META, "seq", 1)
  redis.call("HSET", META, "ms", string.format("%d", ms))
  local id = id_of(ms, seq)

  local key = PREFIX .. "history:" .. channel
  local newest = redis.call("XREVRANGE", key, "+", "-", "COUNT", 1)
  local prev = ""
  if #newest > 0 then
    prev = newest[1][1]
  end
  redis.call("XADD", key, "MAXLEN", MAXLEN, id, "d", data, "e", event, "p", prev)
  if TTL > 0 then
    redis.call("EXPIRE", key, TTL)
  end
  redis.call("PUBLISH", PREFIX .. "#" .. channel, -- the durable channel: see message.py
    "\0bc1\n" .. id .. "\n" .. prev .. "\n" .. event .. "\n" .. string.format("%d", ms) .. "\n" .. data)
  if remembered then
    redis.call("SET", remembered, id, "PX", IDEMPOTENCY_WINDOW_MS)
  end
  return id
end

-- FCALL sse_seen 0 <id>: on every reconnect, a node reports the newest id it delivered.
-- On a server that is not the sequence's primary yet, this takes over first. If the id
-- lies in a gap (any of them: a node whose first reconnect comes after a second failover
-- delivered inside the first), a message there reached clients and is lost: resumes from
-- before it must say so.
local function sse_seen(keys, args)
  local seen = args[1]
  local ms, seq = string.match(seen or "", "^(%d+)-(%d+)$")
  if ms == nil then
    return redis.error_reply("ERR usage: FCALL sse_seen 0 <ms>-<seq>")
  end
  check_primary(now_ms())
  local function after(x_ms, x_seq, y_ms, y_seq) -- is x after y?
    x_ms, x_seq, y_ms, y_seq = tonumber(x_ms), tonumber(x_seq), tonumber(y_ms), tonumber(y_seq)
    return x_ms > y_ms or (x_ms == y_ms and x_seq > y_seq)
  end
  local gaps = redis.call("LRANGE", GAPS, 0, -1)
  for index = #gaps, 1, -1 do -- newest first; the ranges never overlap
    local a_ms, a_seq, b_ms, b_seq, s_ms, s_seq =
      string.match(gaps[index], "^(%d+)-(%d+)|(%d+)-(%d+)|(%d+)-(%d+)$")
    if after(ms, seq, s_ms, s_seq) and after(b_ms, b_seq, ms, seq) then
      redis.call("LSET", GAPS, index - 1,
        a_ms .. "-" .. a_seq .. "|" .. b_ms .. "-" .. b_seq .. "|" .. seen)
      return 1
    end
  end
  return 0
end

redis.register_function("sse_publish", sse_publish)
redis.register_function("sse_seen", sse_seen)
