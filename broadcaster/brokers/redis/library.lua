#!lua name=broadcaster
-- broadcaster's Redis Function library, loaded by every node at start (FUNCTION LOAD REPLACE).
-- Placeholders in double braces are filled from the node's settings.
--
-- FCALL sse_publish 1 <channel> <data> [<event> [<idempotency-key> [<flags>]]]  ->  "<ms>-<seq>"
-- (or with every key it touches declared after the channel: see `touched`)
-- Atomically: assign the next id of the channel's sequence, append to the channel's
-- history stream (with the channel's previous id, for gap detection), trim, keep the
-- stream alive for the TTL, and publish the envelope that carries the id to every node.
-- Six commands in all (TIME, HMGET, HSET, XREVRANGE, XADD, PUBLISH), and an expiry once
-- per tenth of the TTL.
-- With an idempotency key (pass "" as the event for none), a repeat of the key on the
-- same channel within the window answers the first publish's id and publishes nothing;
-- a key costs two commands more (SET ... NX GET, INCR). Where the time goes, measured:
-- loadtest/README.md, "The publish benchmark (issue 23)".
-- Flags (pass "" as the event and the key for none): "close" makes the message its
-- channel's last: its entry carries "c", its envelope the closing mark, and later
-- publishes are refused until one has the flag "reopen" ("reopen close" does both).
--
-- Key spaces. On a single Redis every channel shares one sequence, and its keys are
-- PREFIX .. "meta", PREFIX .. "history:<channel>"... On a Redis Cluster a channel's group
-- (its {tag}, or the channel itself) has a sequence of its own, and every key of the
-- group begins PREFIX .. "{<group>}:", so all lie in the slot the call is routed to by
-- its one key, the channel (Redis hashes the same text in both); the live copy goes out
-- with SPUBLISH, inside that shard.

local PREFIX = "{{prefix}}"
-- (Arguments of redis.call are passed as text: Redis 7.0 turns a Lua number into one with
-- snprintf("%.17g") on every call, which cost 0.3 us a message in XADD's MAXLEN alone.)
local MAXLEN = "{{maxlen}}"
local TTL = {{ttl}}
local IDEMPOTENCY_WINDOW_MS = "{{idempotency_window_ms}}"
local IDEMPOTENCY_MAX_KEYS = {{idempotency_max_keys}} -- per channel and window
-- Failovers. A sequence is advanced by one primary at a time, which its META names by
-- its replication id. A server with another replication id (a promoted replica, a
-- restart) may lack the tail the old primary published and never replicated: its ids
-- jump ahead (JUMP in seq, MARGIN_MS in ms: more than any replication lag), so none can
-- name a lost message or sort before one, and GAPS records the range
-- ("<after>|<before>|<seen>") for resumes to tell clients what may be lost there.
-- Reading the server's replication id (INFO) costs more than a publish, so it happens at
-- most every CHECK_MS; the answer is this server's own memory (`replid_at`, reset
-- whenever the library is loaded): no key, so nothing of it reaches a replica, whose
-- clock may be behind, in a full sync. Every sequence compares it with its own META.
local JUMP = 1000000
local MARGIN_MS = 10000
local CHECK_MS = 100

-- History's expiry: a stream lives at least TTL after its last publish, refreshed by
-- the first publish in each SLACK_MS of time, not by every publish (see sse_publish).
local SLACK_MS = {{ttl_slack}} * 1000 -- a tenth of TTL, at least a second

local function bucket(ms)
  return ms - ms % SLACK_MS
end

local function id_of(ms, seq)
  return string.format("%d-%d", ms, seq)
end

local clustered = nil -- whether this server is a Redis Cluster node (asked once)

-- The key space of a channel's sequence, and the command that publishes its live copy.
local function space_of(channel)
  if clustered == nil then
    clustered = string.match(redis.call("INFO", "cluster"), "cluster_enabled:1") ~= nil
  end
  if not clustered then
    return PREFIX, "PUBLISH"
  end
  local tag = string.match(channel, "{([^{}]+)}")
  return PREFIX .. "{" .. (tag or channel) .. "}:", "SPUBLISH"
end

local function take_over(now, meta_key, gaps_key)
  local meta = redis.call("HMGET", meta_key, "ms", "seq")
  if meta[2] == false then
    return -- a fresh sequence: nothing published before, nothing to lose
  end
  local last_ms, last_seq = tonumber(meta[1]), tonumber(meta[2])
  -- MARGIN_MS past both this server's clock and its last id: a second take-over, on a
  -- replica the first one never reached, starts after every id the first issued (they
  -- were at most MARGIN_MS past an earlier clock), instead of issuing the same ones.
  local ms = math.max(now, last_ms) + MARGIN_MS
  local seq = last_seq + JUMP
  redis.call("HSET", meta_key, "ms", string.format("%d", ms), "seq", string.format("%d", seq - 1))
  local after = id_of(last_ms, last_seq)
  redis.call("RPUSH", gaps_key, after .. "|" .. id_of(ms, seq) .. "|" .. after)
  redis.call("LTRIM", gaps_key, -32, -1)
end

local replid, replid_at = nil, nil

-- Make sure this server advances the sequence of `space`, whose META names `known`
-- (taking it over if another primary did before); whether META changed.
local function check_primary(now, space, known)
  if not (replid_at and now >= replid_at and now - replid_at < CHECK_MS) then
    replid = string.match(redis.call("INFO", "replication"), "master_replid:(%w+)")
    replid_at = now
  end
  if known == replid then
    return false
  end
  local meta_key = space .. "meta"
  if known then
    take_over(now, meta_key, space .. "gaps")
  end
  redis.call("HSET", meta_key, "replid", replid)
  return true
end

local function now_ms()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Every key it touches, in the order a caller may declare them after the channel.
local function touched(space, channel, key)
  local names = { space .. "meta", space .. "history:" .. channel, space .. "gaps" }
  if key ~= "" then
    table.insert(names, space .. "idemcount:" .. channel)
    table.insert(names, space .. "idem:" .. channel .. " " .. key)
  end
  return names
end

-- What is wrong with a message's channel, event or idempotency key (nil: nothing).
local function refused(channel, data, event, key, flags)
  if channel == nil or data == nil then
    return "ERR usage: FCALL sse_publish 1 <channel> <data> [<event> [<idempotency-key> [<flags>]]]"
  end
  if #channel > 200 or not (string.match(channel, "^[%w%-_%.:@/=]+$")
      or string.match(channel, "^[%w%-_%.:@/=]*{[%w%-_%.:@/=]+}[%w%-_%.:@/=]*$")) then
    return "ERR channel name must be 1-200 of letters, digits and - _ . : @ / =, and at most one {tag}"
  end
  if string.find(event, "[\r\n%z]") then
    return "ERR event must not contain CR, LF or NUL"
  end
  if key ~= "" and (#key > 255 or not string.match(key, "^[%w%-_%.:@/=+]+$")) then
    return "ERR idempotency key must be 1-255 of letters, digits and - _ . : @ / = +"
  end
  for word in string.gmatch(flags, "%S+") do
    if word ~= "close" and word ~= "reopen" then
      return "ERR flags are words of: close reopen"
    end
  end
  return nil
end

local function flagged(flags, name)
  return flags ~= "" and string.find(" " .. flags .. " ", " " .. name .. " ", 1, true) ~= nil
end

-- One call's hold on a sequence: its clock, its next seq, each channel's newest id.
local function open_sequence(space, publish)
  local ms = now_ms()
  local meta_key = space .. "meta"
  local meta = redis.call("HMGET", meta_key, "ms", "seq", "epoch", "replid")
  if check_primary(ms, space, meta[4]) then
    meta = redis.call("HMGET", meta_key, "ms", "seq", "epoch") -- (a take-over moved it)
  end
  local last_ms = tonumber(meta[1]) or 0
  if ms < last_ms then
    ms = last_ms -- the clock went back: ids must not
  end
  return { space = space, publish = publish, meta_key = meta_key, fresh = meta[3] == false,
    ms = ms, ms_text = string.format("%d", ms), seq = tonumber(meta[2]) or 0, newest = {},
    closed = {}, floor = bucket(ms) } -- (where the SLACK of `ms` begins)
end

-- Write back where the sequence stands (one HSET however many were published).
local function close_sequence(seq)
  local seq_text = string.format("%d", seq.seq)
  if seq.fresh then -- a new sequence begins now
    redis.call("HSET", seq.meta_key, "ms", seq.ms_text, "seq", seq_text, "epoch", seq.ms_text)
  else
    redis.call("HSET", seq.meta_key, "ms", seq.ms_text, "seq", seq_text)
  end
end

-- A bound on what keys may cost: a counter per channel, for one window from its first;
-- one key more on `channel`, and how many it has now.
local function counted(space, channel)
  local counter = space .. "idemcount:" .. channel
  local keys = redis.call("INCR", counter)
  if keys == 1 then
    redis.call("PEXPIRE", counter, IDEMPOTENCY_WINDOW_MS)
  end
  return keys
end

-- A batch call's replies as a call key remembers them (one per line, an error as "!"
-- and its text; no id or error holds a line break), and back.
local function remembered_replies(replies)
  local lines = {}
  for i, reply in ipairs(replies) do
    lines[i] = type(reply) == "table" and "!" .. reply.err or reply
  end
  return table.concat(lines, "\n")
end

local function replies_of(text)
  local replies = {}
  for line in string.gmatch(text, "[^\n]+") do
    replies[#replies + 1] = string.sub(line, 1, 1) == "!"
      and redis.error_reply(string.sub(line, 2)) or line
  end
  return replies
end

-- Publish one message in `seq`: its id, a repeat's first id, or an error reply (it
-- raises if Redis refuses a command: see `publish_safely`).
local function publish_one(seq, channel, data, event, key, flags)
  local space = seq.space
  local ms = seq.ms
  local id = id_of(ms, seq.seq + 1) -- the next id: the sequence takes it only if published
  local history = space .. "history:" .. channel
  local prev, closed = seq.newest[channel], seq.closed[channel]
  if prev == nil then
    local newest = redis.call("XREVRANGE", history, "+", "-", "COUNT", "1")[1]
    -- (A closing entry's fields are d, e, p and c: see the XADD below.)
    prev, closed = newest and newest[1] or "", newest ~= nil and newest[2][7] == "c"
    seq.newest[channel], seq.closed[channel] = prev, closed
  end
  local remembered = nil
  if key ~= "" then
    -- Neither channels nor keys contain a space: one key per (channel, idempotency key).
    -- One command both looks the key up and, if it is new, remembers this id under it
    -- (SET with NX and GET, together since Redis 7.0): a repeat gets the first id back.
    remembered = space .. "idem:" .. channel .. " " .. key
    local first = redis.call("SET", remembered, id, "NX", "PX", IDEMPOTENCY_WINDOW_MS, "GET")
    if first then
      -- A repeat writes nothing new, yet a WAIT after it must cover the first publish:
      -- WAIT counts replicas past this connection's own last write, which a connection
      -- that only retried never made. Rewriting the key (same value, same expiry) is a
      -- write after the first publish in the replication stream, so it covers it.
      redis.call("SET", remembered, first, "KEEPTTL")
      return first
    end
  end
  -- From here on, a message not published forgets its key again: a retry is then
  -- refused too (or published), never answered with an id that names nothing.
  local close = flagged(flags, "close")
  if closed and not flagged(flags, "reopen") then
    if remembered then
      redis.call("DEL", remembered)
    end
    return redis.error_reply("ERR {{closed_reason}}")
  end
  if remembered and counted(space, channel) > IDEMPOTENCY_MAX_KEYS then
    redis.call("DEL", remembered)
    return redis.error_reply("ERR {{key_limit_reason}}")
  end
  local added
  if close then
    added = redis.pcall("XADD", history, "MAXLEN", MAXLEN, id, "d", data, "e", event, "p", prev,
      "c", "1")
  else
    added = redis.pcall("XADD", history, "MAXLEN", MAXLEN, id, "d", data, "e", event, "p", prev)
  end
  if type(added) == "table" then -- refused (the stream holds a newer id: written by another)
    if remembered then
      redis.call("DEL", remembered)
    end
    error(added)
  end
  seq.seq = seq.seq + 1
  if TTL > 0 and (prev == "" or tonumber(string.match(prev, "^%d+")) < seq.floor) then
    -- The first publish in each SLACK of time (or on a new stream) moves the expiry to
    -- TTL + SLACK past it: every later publish in that SLACK is then TTL from expiring.
    -- (`prev` is older than this id, so it is in another SLACK if before `seq.floor`.)
    redis.call("PEXPIREAT", history, ms + TTL * 1000 + SLACK_MS)
  end
  seq.newest[channel], seq.closed[channel] = id, close
  redis.call(seq.publish, space .. "#" .. channel, -- the durable channel: see message.py
    (close and "\0bc1c\n" or "\0bc1\n") .. id .. "\n" .. prev .. "\n" .. event .. "\n"
    .. seq.ms_text .. "\n" .. data)
  return id
end

-- `publish_one`, its failure (a command Redis refused: a history key of another type, a
-- stream written by something else) an error reply in its place: the messages before it
-- stay published, and `close_sequence` still records their ids, which a later call
-- would otherwise issue again.
local function publish_safely(seq, channel, data, event, key, flags)
  local ok, result = pcall(publish_one, seq, channel, data, event, key, flags)
  if ok then
    return result
  end
  return type(result) == "table" and result or redis.error_reply(tostring(result))
end

local function sse_publish(keys, args)
  local channel, data, event, key = keys[1], args[1], args[2] or "", args[3] or ""
  local flags = args[4] or ""
  local wrong = refused(channel, data, event, key, flags)
  if wrong then
    return redis.error_reply(wrong)
  end
  local space, publish = space_of(channel)
  if #keys > 1 then
    -- The declared form (FCALL sse_publish <n> <channel> <meta> <history> <gaps>
    -- [<idemcount> <idem>] ...): on a Redis Cluster a slot migration checks declared keys
    -- before it lets a call run, so a call never runs where part of its group has moved.
    local names = touched(space, channel, key)
    if #keys ~= #names + 1 then
      return redis.error_reply("ERR declare the channel alone, or with every key it touches")
    end
    for index, name in ipairs(names) do
      if keys[index + 1] ~= name then
        return redis.error_reply("ERR declared key " .. keys[index + 1] .. " is not " .. name)
      end
    end
  end
  local seq = open_sequence(space, publish)
  local id = publish_safely(seq, channel, data, event, key, flags)
  close_sequence(seq)
  return id
end

-- FCALL sse_publish_batch 1 <channel> <n> <call-key> <channel 1> <data 1> <event 1> <key 1>
--   <flags 1> ... (<call-key>, <event>, <key> and <flags> "" for none): n messages of one
-- sequence (on a Redis Cluster, of the first channel's group), in order, each exactly as
-- by sse_publish; the ids (a repeat's first id; an error, such as a channel past its key
-- limit, in its place). Nothing is published if any message is malformed, or of another
-- group. A call key makes the whole call idempotent for the window, as a key makes one
-- message: a repeat answers the first call's replies and publishes nothing. It costs two
-- commands a call where keys on its messages cost two each (the Python publishers key
-- their calls, not their messages, for the retries of a batch).
local function sse_publish_batch(keys, args)
  local count, call_key = tonumber(args[1]), args[2]
  if keys[1] == nil or #keys ~= 1 or count == nil or #args ~= 2 + 5 * count then
    return redis.error_reply("ERR usage: FCALL sse_publish_batch 1 <channel> <n> <call-key> "
      .. "<channel> <data> <event> <key> <flags> ...")
  end
  local space, publish = space_of(keys[1])
  for i = 3, #args, 5 do
    local wrong = refused(args[i], args[i + 1], args[i + 2], args[i + 3], args[i + 4])
    if wrong then
      return redis.error_reply(wrong)
    end
    if space_of(args[i]) ~= space then
      return redis.error_reply("ERR every channel of a batch must be in one group")
    end
  end
  local remembered = nil
  if call_key ~= "" then
    local wrong = refused(keys[1], "", "", call_key, "")
    if wrong then
      return redis.error_reply(wrong)
    end
    remembered = space .. "call:" .. keys[1] .. " " .. call_key
    local first = redis.call("GET", remembered)
    if first then
      redis.call("SET", remembered, first, "KEEPTTL") -- (for a WAIT after it: see publish_one)
      return replies_of(first)
    end
    if counted(space, keys[1]) > IDEMPOTENCY_MAX_KEYS then
      return redis.error_reply("ERR {{key_limit_reason}}")
    end
  end
  local seq = open_sequence(space, publish)
  local ids = {}
  for i = 3, #args, 5 do
    local channel, data, event, key, flags = args[i], args[i + 1], args[i + 2], args[i + 3], args[i + 4]
    ids[#ids + 1] = publish_safely(seq, channel, data, event, key, flags)
  end
  close_sequence(seq)
  if remembered then
    redis.call("SET", remembered, remembered_replies(ids), "PX", IDEMPOTENCY_WINDOW_MS)
  end
  return ids
end

-- FCALL sse_seen 0 <id> (on a Redis Cluster: FCALL sse_seen 1 <channel> <id>, for the
-- channel's group): on every reconnect, a node reports the newest id it delivered.
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
  local space = space_of(keys[1] or "")
  if clustered and keys[1] == nil then
    return redis.error_reply("ERR usage on a Redis Cluster: FCALL sse_seen 1 <channel> <ms>-<seq>")
  end
  check_primary(now_ms(), space, redis.call("HGET", space .. "meta", "replid"))
  local gaps_key = space .. "gaps"
  local function after(x_ms, x_seq, y_ms, y_seq) -- is x after y?
    x_ms, x_seq, y_ms, y_seq = tonumber(x_ms), tonumber(x_seq), tonumber(y_ms), tonumber(y_seq)
    return x_ms > y_ms or (x_ms == y_ms and x_seq > y_seq)
  end
  local gaps = redis.call("LRANGE", gaps_key, 0, -1)
  for index = #gaps, 1, -1 do -- newest first; the ranges never overlap
    local a_ms, a_seq, b_ms, b_seq, s_ms, s_seq =
      string.match(gaps[index], "^(%d+)-(%d+)|(%d+)-(%d+)|(%d+)-(%d+)$")
    if after(ms, seq, s_ms, s_seq) and after(b_ms, b_seq, ms, seq) then
      redis.call("LSET", gaps_key, index - 1,
        a_ms .. "-" .. a_seq .. "|" .. b_ms .. "-" .. b_seq .. "|" .. seen)
      return 1
    end
  end
  return 0
end

redis.register_function("sse_publish", sse_publish)
redis.register_function("sse_publish_batch", sse_publish_batch)
redis.register_function("sse_seen", sse_seen)
