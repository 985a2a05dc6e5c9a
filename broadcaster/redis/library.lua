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
local META = PREFIX .. "meta"

local function sse_publish(keys, args)
  local channel, data, event, key = keys[1], args[1], args[2] or "", args[3] or ""
  if channel == nil or data == nil then
    return redis.error_reply(
      "ERR usage: FCALL sse_publish 1 <channel> <data> [<event> [<idempotency-key>]]")
  end
  if #channel > 200 or not string.match(channel, "^[%w%-_%.:@/=]+$") then
    return redis.error_reply("ERR channel name must be 1-200 of letters, digits and - _ . : @ / =")
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
      return first
    end
  end
  local time = redis.call("TIME")
  local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
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
  local id = string.format("%d-%d", ms, seq)

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
  redis.call("PUBLISH", PREFIX .. channel,
    "\0bc1\n" .. id .. "\n" .. prev .. "\n" .. event .. "\n" .. string.format("%d", ms) .. "\n" .. data)
  if remembered then
    redis.call("SET", remembered, id, "PX", IDEMPOTENCY_WINDOW_MS)
  end
  return id
end

redis.register_function("sse_publish", sse_publish)
