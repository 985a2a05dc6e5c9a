#!lua name=broadcaster_replay
-- broadcaster's read-only Redis Function library: replays read a page at a time, so that
-- no node ever holds a whole replay. Loaded by every node at start (FUNCTION LOAD REPLACE).
--
-- FCALL_RO sse_replay_page <n> <history key>... <upper> <page> <budget> <tail> <cursor>...
--   One page of the channels' entries after their cursors ("-": from the oldest; else an
--   id) up to <upper> (an id, or "+"), merged in id order, until the page holds <page>
--   bytes of frames (at least one entry). <budget> bytes (0: no bound) and the <tail>
--   newest entries (-1: no bound) bound the whole replay from its newest end: older
--   entries are skipped. The first page of a replay passes them; later pages pass 0, -1.
-- Reply: {broken, cut, start, entries, more}
--   broken: key numbers (from 1) whose first entry after an id cursor does not follow it
--     (the entry before it, newer than the cursor, was trimmed). They are not read.
--   cut: key numbers that lost entries to <budget>; start: the id the kept entries follow
--     ("" when nothing was skipped).
--   entries: <key number>, <id>, <prev>, <event>, <data> of each entry, in id order.
--   more: 1 if entries up to <upper> remain after the page.

local BATCH = 32 -- entries read from a stream at a time

local function parse(id)
  local ms, seq = string.match(id, "^(%d+)%-(%d+)$")
  return tonumber(ms), tonumber(seq)
end

local function entry(id) -- an id as an entry, to compare
  local ms, seq = parse(id)
  return { id = id, ms = ms, seq = seq }
end

local function later(a, b) -- whether entry a comes after entry b
  return a.ms > b.ms or (a.ms == b.ms and a.seq > b.seq)
end

-- The bytes of the entry's event-stream frame as sse.py encodes it (about, if its data
-- holds a CR or invalid UTF-8).
local function size(e)
  local data = e.d or ""
  local _, breaks = string.gsub(data, "\n", "")
  local event = e.e or ""
  return #e.id + 5 + (#event > 0 and #event + 8 or 0) + #data + 6 * breaks + 7 + 1
end

-- A cursor over one stream: forward from `from` to `to`, or backward (XREVRANGE: from
-- the newer bound to the older one).
local function reader(key, from, to, backward)
  return { key = key, from = from, to = to, backward = backward, buf = {}, pos = 1 }
end

local function peek(r)
  if r.pos > #r.buf and not r.done then
    local command = r.backward and "XREVRANGE" or "XRANGE"
    local raw = redis.call(command, r.key, r.from, r.to, "COUNT", BATCH)
    r.buf, r.pos, r.done = {}, 1, #raw < BATCH
    for i, item in ipairs(raw) do
      local e, fields = { id = item[1] }, item[2]
      for j = 1, #fields, 2 do
        e[fields[j]] = fields[j + 1]
      end
      e.ms, e.seq = parse(item[1])
      r.buf[i] = e
    end
    if #raw > 0 then
      r.from = "(" .. raw[#raw][1]
    end
  end
  return r.buf[r.pos]
end

-- The reader whose next entry is the newest (or oldest), and that entry.
local function pick(readers, newest)
  local best, chosen = nil, nil
  for i, r in pairs(readers) do
    local e = peek(r)
    if e and (chosen == nil or later(e, chosen) == newest) then
      best, chosen = i, e
    end
  end
  return best, chosen
end

-- Going back from the newest entry: the first that does not fit in <budget> bytes or the
-- <tail> newest, and the channels whose entries it leaves out within the tail.
local function bound(readers, budget, tail)
  local used, count = 0, 0
  while true do
    local i, e = pick(readers, true)
    if i == nil or (tail >= 0 and count >= tail) then
      return e, {}
    end
    local bytes = size(e)
    if budget > 0 and used + bytes > budget then
      local cut, marked = {}, {}
      if tail < 0 then
        for j, r in pairs(readers) do
          if peek(r) then
            cut[#cut + 1] = j
          end
        end
      else
        local spare = tail - count -- entries still within the tail
        while i ~= nil and spare > 0 do
          if not marked[i] then
            marked[i], cut[#cut + 1] = true, i
          end
          readers[i].pos, spare = readers[i].pos + 1, spare - 1
          i = pick(readers, true)
        end
      end
      return e, cut
    end
    used, count = used + bytes, count + 1
    readers[i].pos = readers[i].pos + 1
  end
end

local function sse_replay_page(keys, args)
  local upper, page = args[1], tonumber(args[2])
  local budget, tail = tonumber(args[3]), tonumber(args[4])
  local cursors, broken = {}, {}
  for i, key in ipairs(keys) do
    local cursor = args[4 + i]
    -- (Past <upper> too: if all up to it were trimmed, the entry after them tells.)
    local first = cursor ~= "-" and redis.call("XRANGE", key, "(" .. cursor, "+", "COUNT", 1)[1]
    local prev = nil
    if first then
      for j = 1, #first[2], 2 do
        if first[2][j] == "p" then
          prev = first[2][j + 1]
        end
      end
    end
    if prev and prev ~= "" and later(entry(prev), entry(cursor)) then
      broken[#broken + 1] = i
    else
      cursors[i] = cursor
    end
  end
  local start, cut = nil, {}
  if budget > 0 or tail >= 0 then
    local back = {}
    for i, cursor in pairs(cursors) do
      back[i] = reader(keys[i], upper, cursor == "-" and "-" or "(" .. cursor, true)
    end
    start, cut = bound(back, budget, tail)
  end
  local forward = {}
  for i, cursor in pairs(cursors) do
    local from = cursor == "-" and "-" or "(" .. cursor
    if start and (cursor == "-" or later(start, entry(cursor))) then
      from = "(" .. start.id
    end
    forward[i] = reader(keys[i], from, upper, false)
  end
  local entries, used = {}, 0
  while used < page do
    local i, e = pick(forward, false)
    if i == nil then
      break
    end
    for _, value in ipairs({ i, e.id, e.p or "", e.e or "", e.d or "" }) do
      entries[#entries + 1] = value
    end
    used = used + size(e)
    forward[i].pos = forward[i].pos + 1
  end
  local more = pick(forward, false) ~= nil and 1 or 0
  return { broken, cut, start and start.id or "", entries, more }
end

redis.register_function({
  function_name = "sse_replay_page",
  callback = sse_replay_page,
  flags = { "no-writes" },
})
