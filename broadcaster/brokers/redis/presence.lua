#!lua name=broadcaster_presence
-- broadcaster's presence library: each channel's identified subscribers, and their
-- `join` and `leave` events, decided in one place for every node. Loaded by every node
-- at start (FUNCTION LOAD REPLACE).
--
-- A channel's identified subscribers are a sorted set, every score 0 so it is ordered
-- by member: one member per subscriber and node process,
-- "<sub>\0<process>\0<connections>\0<info>". A subscriber is present while any member
-- begins with "<sub>\0" (no `sub` holds a NUL).
--
-- FCALL sse_presence 1 <who key> <pubsub channel> <publish command> <announce 0|1>
--       <expire s> <process> (<sub> <new member> <event data>)*
--   Puts each new member (empty: none) in place of whatever member <process> had for
--   the sub (found by prefix, so a reply the caller never got cannot leave a stale one).
--   With announce 1, a subscriber that had no member before and has one after gets a
--   live-only `join` event, the reverse a `leave`, published with <event data> on
--   <pubsub channel>.
--
-- FCALL sse_presence_gone 1 <who key> <pubsub channel> <publish command> <announce 0|1>
--       <process>
--   Removes every member of <process> (a dead one), announcing a `leave` for each
--   subscriber left without one.
--
-- The live-only envelope is "\0bc1l\n\n\n<event>\n<ms>\n<data>": no id, no prev, never
-- stored (see broadcaster/core/message.py).

local function present(key, sub)
  return #redis.call("ZRANGE", key, "[" .. sub .. "\0", "(" .. sub .. "\1", "BYLEX", "LIMIT", 0, 1) > 0
end

local function announce(args, event, data)
  local now = redis.call("TIME")
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call(args[2], args[1], "\0bc1l\n\n\n" .. event .. "\n" .. ms .. "\n" .. data)
end

local function sse_presence(keys, args)
  local key = keys[1]
  local announcing = args[3] == "1"
  local added = false
  local process = args[5]
  for i = 6, #args, 3 do
    local sub, new, data = args[i], args[i + 1], args[i + 2]
    local before = announcing and present(key, sub)
    local mine = sub .. "\0" .. process .. "\0"
    redis.call("ZREMRANGEBYLEX", key, "[" .. mine, "(" .. sub .. "\0" .. process .. "\1")
    if new ~= "" then
      redis.call("ZADD", key, 0, new)
      added = true
    end
    if announcing then
      local after = present(key, sub)
      if after and not before then
        announce(args, "join", data)
      elseif before and not after then
        announce(args, "leave", data)
      end
    end
  end
  if added then
    redis.call("EXPIRE", key, args[4])
  end
  return 0
end

local function sse_presence_gone(keys, args)
  local key = keys[1]
  local announcing = args[3] == "1"
  local marker = "\0" .. args[4] .. "\0"
  local gone = 0
  for _, member in ipairs(redis.call("ZRANGE", key, 0, -1)) do
    local at = string.find(member, marker, 1, true)
    if at then
      redis.call("ZREM", key, member)
      gone = gone + 1
      local sub = string.sub(member, 1, at - 1)
      if announcing and not present(key, sub) then
        local info = string.match(member, "^[^%z]*%z[^%z]*%z[^%z]*%z(.*)$") or "null"
        announce(args, "leave", '{"sub":' .. cjson.encode(sub) .. ',"info":' .. info .. "}")
      end
    end
  end
  return gone
end

redis.register_function("sse_presence", sse_presence)
redis.register_function("sse_presence_gone", sse_presence_gone)
