#!lua name=swt_v1
--[[
sliding-window-throttler: the decision of one hit over one or more throttles.

This file is loaded with FUNCTION LOAD as the library `swt_v1`. Without
functions (Redis 6, or enable_redis_functions=False) the same text runs through
EVALSHA: _redis_common.py drops the shebang and the registration block at the
end and appends `return decide(KEYS, ARGV)` (or `reset`). Bump the version in
the library name and in the function names whenever the code changes.

Units: every time is an integer number of MICROSECONDS (the server's TIME, or
the caller's now_us); windows and block durations arrive in MILLISECONDS
(ttl_ms, block_ms) and are turned into microseconds here; key expiry is set in
milliseconds. Lua numbers are doubles: integers below 2^53 are exact, so times
stay numbers and leave as integer replies or through string.format('%d'); never
tostring() or `..` a time (that keeps 14 significant digits).

It mirrors core/sliding_window.py `judge` and MemoryStorage `_decide` /
`_record`: the non-empty slots of a ring hold exactly the times that
MemoryStorage keeps for the pair, so both decide identically (the Python side
builds the records with core/decision.py `make_record`).

Keys, all in the slot of the identifier's hash tag:
  keys[1]       the index: the identifier's throttle names, " a b c "
  keys[1 + i]   the ring of throttle i, named keys[1] .. ":" .. name

Ring: one string per (identifier, throttle) pair, fixed size. One GETRANGE
reads the header and the first PREFETCH slots; a larger ring is searched with
one GETRANGE per probe and written with SETRANGE, so a decision costs
O(log limit) commands whatever the number of hits in the window:
  header, 29 bytes, big-endian:
    version u8 | capacity u32 | head u32 | count u32 | base f64 | blocked_until f64
  then `capacity` slots of 6 bytes (u48): t - base, or 0 for an empty slot.
The slot at `head` is the oldest (logical index 0); reading on from there the
ring is sorted, empty slots first, so the non-empty ones are the logical range
[capacity - count, capacity). `base` keeps slot values small: a rebuild (a new
limit, or after 2^48 us = 8.9 years) moves it just below the oldest kept time.
]]

local VERSION = 1
local HEADER = 29
local HEADER_FORMAT = '>BI4I4I4dd'
local SLOT = 6
local SLOT_FORMAT = '>I6'
local SPAN = 2 ^ 48
-- Slots read along with the header in one GETRANGE: a ring this small is read
-- and written whole, in one command each; a larger one range by range.
local PREFETCH = 64
local NO_BLOCK = -2 ^ 53
local MAX_TIME = 2 ^ 52
local MAX_LIMIT = 1000000
local MAX_DURATION_MS = 366 * 86400000
-- With an explicit time, expiry is relative to the simulated clock, which may
-- run slower than the server's: keep keys this much longer so a slow
-- simulation never loses state it still needs.
local EXPLICIT_GRACE_MS = 60000
-- The index outlives its longest pair by up to this much, so it is extended
-- about once a second rather than on every hit.
local INDEX_SLACK_MS = 1000

local ADMITTED, LIMIT_REACHED, BLOCKED, COST_EXCEEDS_LIMIT = 0, 1, 2, 3
local NEVER = -1

local function int(x)
  return string.format('%d', x)
end

local function is_int(x, low, high)
  return x ~= nil and x == math.floor(x) and x >= low and x <= high
end

local function check(ok, message)
  if not ok then
    error({err = 'SWT bad argument: ' .. message})
  end
end

local function open(key)
  local raw = redis.call('GETRANGE', key, 0, HEADER + PREFETCH * SLOT - 1)
  local ring = {key = key, cap = 0, head = 0, count = 0, base = 0,
                blocked = NO_BLOCK, raw = raw, seen = {}, dirty = false}
  if raw == '' then
    return ring
  end

  local _
  _, ring.cap, ring.head, ring.count, ring.base, ring.blocked =
    struct.unpack(HEADER_FORMAT, raw .. string.rep('\0', HEADER))
  ring.whole = ring.cap <= PREFETCH
  check(string.byte(raw, 1) == VERSION
        and #raw == HEADER + math.min(ring.cap, PREFETCH) * SLOT,
        'key ' .. key .. ' does not hold a version 1 ring')
  return ring
end

-- The time in logical slot i (0 = oldest); only for i in [cap - count, cap).
local function slot(ring, i)
  local at = HEADER + ((ring.head + i) % ring.cap) * SLOT
  if at + SLOT <= #ring.raw then
    return ring.base + struct.unpack(SLOT_FORMAT, ring.raw, at + 1)
  end

  local value = ring.seen[at]
  if value == nil then
    value = struct.unpack(SLOT_FORMAT, redis.call('GETRANGE', ring.key, at, at + SLOT - 1))
    ring.seen[at] = value
  end

  return ring.base + value
end

local function newest(ring)
  if ring.count == 0 then
    return nil
  end

  return slot(ring, ring.cap - 1)
end

-- The logical index of the oldest slot still in the window (cap when none).
local function first_in_window(ring, edge)
  local low, high = ring.cap - ring.count, ring.cap
  while low < high do
    local mid = math.floor((low + high) / 2)
    if slot(ring, mid) <= edge then
      low = mid + 1
    else
      high = mid
    end
  end

  return low
end

-- core/sliding_window.py `judge`, on a ring.
local function judge(ring, t, now, cost)
  ring.first = first_in_window(ring, now - t.ttl_us)
  ring.in_window = math.min(ring.cap - ring.first, t.limit)
  if cost > t.limit then
    return COST_EXCEEDS_LIMIT, NEVER
  end

  local window_wait = 0
  if ring.in_window + cost > t.limit then
    -- The cost-th oldest among the newest `limit` admissions must leave.
    window_wait = slot(ring, ring.cap - t.limit + cost - 1) + t.ttl_us - now
  end

  if ring.blocked > now then
    return BLOCKED, math.max(ring.blocked - now, window_wait)
  end

  if window_wait > 0 then
    return LIMIT_REACHED, window_wait
  end

  return ADMITTED, 0
end

-- A small ring is patched in Lua and written back once by `flush`; a large
-- one is written range by range.
local function write(ring, offset, bytes)
  if ring.whole then
    ring.raw = ring.raw:sub(1, offset) .. bytes .. ring.raw:sub(offset + #bytes + 1)
    ring.dirty = true
  else
    redis.call('SETRANGE', ring.key, offset, bytes)
  end
end

local function flush(ring)
  if ring.dirty then
    redis.call('SETRANGE', ring.key, 0, ring.raw)
    ring.dirty = false
  end
end

local function write_header(ring)
  write(ring, 0, struct.pack(HEADER_FORMAT, VERSION, ring.cap, ring.head, ring.count,
    ring.base, ring.blocked))
end

-- Write `cell` into logical slots [from, to), splitting where the ring wraps.
local function fill(ring, from, to, cell)
  if to <= from then
    return
  end

  local at = (ring.head + from) % ring.cap
  local n = to - from
  local before_wrap = math.min(n, ring.cap - at)
  write(ring, HEADER + at * SLOT, string.rep(cell, before_wrap))
  if n > before_wrap then
    write(ring, HEADER, string.rep(cell, n - before_wrap))
  end
end

-- A new string of `limit` slots holding the kept times and `cost` times `now`
-- (a new pair, a changed limit, or a base too far behind). O(limit), rare.
local function rebuild(ring, limit, from, now, cost)
  local kept = {}
  if from < ring.cap then
    local raw = ring.whole and ring.raw or redis.call('GET', ring.key)
    for i = from, ring.cap - 1 do
      local at = HEADER + ((ring.head + i) % ring.cap) * SLOT
      kept[#kept + 1] = ring.base + struct.unpack(SLOT_FORMAT, raw, at + 1)
    end
  end

  local base = (kept[1] or now) - 1
  local count = #kept + cost
  local parts = {struct.pack(HEADER_FORMAT, VERSION, limit, 0, count, base, ring.blocked),
                 string.rep(struct.pack(SLOT_FORMAT, 0), limit - count)}
  for _, t in ipairs(kept) do
    parts[#parts + 1] = struct.pack(SLOT_FORMAT, t - base)
  end

  parts[#parts + 1] = string.rep(struct.pack(SLOT_FORMAT, now - base), cost)
  redis.call('SET', ring.key, table.concat(parts))
end

-- MemoryStorage `_record`: drop the expired hits (and those beyond a lowered
-- limit), then append `cost` copies of `now`.
local function record(ring, limit, now, cost)
  local oldest = ring.cap - ring.count
  local drop = math.max(ring.first - oldest, ring.count + cost - limit)
  if ring.cap ~= limit or now - ring.base >= SPAN then
    rebuild(ring, limit, oldest + drop, now, cost)
    return
  end

  -- The cost oldest slots are overwritten below; clear the other dropped ones
  -- so that a later, longer window cannot count them again.
  fill(ring, math.max(cost, oldest), oldest + drop, struct.pack(SLOT_FORMAT, 0))
  fill(ring, 0, cost, struct.pack(SLOT_FORMAT, now - ring.base))
  ring.head = (ring.head + cost) % ring.cap
  ring.count = ring.count - drop + cost
  write_header(ring)
  flush(ring)
end

-- Set a written pair's expiry: the end of its window or block, whichever is
-- later. Returns its time to live in milliseconds from now, for the index.
local function expire(ring, t, last, now, clock_us, explicit)
  local expires_at = math.max(last + t.ttl_us, ring.blocked)
  if explicit then
    local ttl_ms = math.floor((expires_at - now) / 1000) + EXPLICIT_GRACE_MS
    redis.call('PEXPIRE', ring.key, int(ttl_ms))
    return ttl_ms
  end

  -- A key lives while the server's millisecond clock is <= its expiry, so the
  -- floor keeps it for every microsecond before expires_at and no longer.
  local at_ms = math.floor(expires_at / 1000)
  redis.call('PEXPIREAT', ring.key, int(at_ms))
  return at_ms - math.floor(clock_us / 1000)
end

local function update_index(index, names, ttl_ms)
  local listed = redis.call('GET', index) or ' '
  local text = listed
  for _, name in ipairs(names) do
    if not string.find(text, ' ' .. name .. ' ', 1, true) then
      text = text .. name .. ' '
    end
  end

  if text ~= listed then
    redis.call('SET', index, text, 'KEEPTTL')
  end

  if redis.call('PTTL', index) < ttl_ms then
    redis.call('PEXPIRE', index, int(ttl_ms + INDEX_SLACK_MS))
  end
end

local function parse_throttles(keys, args)
  local n = (#args - 3) / 4
  check(n >= 1 and n == math.floor(n), 'expected 3 + 4 * n arguments, got ' .. #args)
  check(#keys == n + 1, 'expected ' .. (n + 1) .. ' keys, got ' .. #keys)
  local throttles, seen = {}, {}
  for i = 1, n do
    local name = args[3 + 4 * i - 3]
    local t = {name = name, limit = tonumber(args[3 + 4 * i - 2]),
               ttl_ms = tonumber(args[3 + 4 * i - 1]), block_ms = tonumber(args[3 + 4 * i])}
    check(#name <= 64 and string.find(name, '^[%w_%.%-]+$') ~= nil, 'throttle name ' .. name)
    check(not seen[name], 'throttle ' .. name .. ' given twice')
    check(keys[1 + i] == keys[1] .. ':' .. name, 'key ' .. keys[1 + i] .. ' for ' .. name)
    check(is_int(t.limit, 1, MAX_LIMIT), 'limit of ' .. name)
    check(is_int(t.ttl_ms, 1, MAX_DURATION_MS), 'ttl_ms of ' .. name)
    check(is_int(t.block_ms, 0, MAX_DURATION_MS), 'block_ms of ' .. name)
    t.ttl_us, t.block_us = t.ttl_ms * 1000, t.block_ms * 1000
    seen[name] = true
    throttles[i] = t
  end

  return throttles
end

--[[
Decide one hit over every throttle given, atomically: admitted only if every
throttle admits it, then recorded in all of them, otherwise in none.

keys: the index, then one ring per throttle.
args: mode ('hit' or 'peek'), now_us ('' for the server's TIME), cost, then
      per throttle: name, limit, ttl_ms, block_ms.
Reply: {now_us, then per throttle: outcome, in_window, wait_us,
        oldest_expires_in_us, recorded, blocked}: outcome 0 admitted, 1 limit
        reached, 2 blocked, 3 cost exceeds limit; wait_us -1 for never;
        recorded 1 when the hit is (or, for a peek, would be) recorded;
        blocked 1 when the pair is blocked after the decision.
]]
local function decide(keys, args)
  local mode, cost = args[1], tonumber(args[3])
  check(mode == 'hit' or mode == 'peek', 'mode ' .. tostring(mode))
  check(is_int(cost, 0, MAX_TIME), 'cost')
  local throttles = parse_throttles(keys, args)
  local explicit = args[2] ~= ''
  local clock_us = tonumber(args[2])
  if not explicit then
    local time = redis.call('TIME')
    clock_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  end

  check(is_int(clock_us, -MAX_TIME, MAX_TIME), 'now_us')

  -- One instant for the whole hit, never before a pair's newest admission:
  -- a clock that steps back stands still, and every ring stays sorted.
  local rings, now = {}, clock_us
  for i = 1, #throttles do
    rings[i] = open(keys[1 + i])
    now = math.max(now, newest(rings[i]) or now)
  end

  local verdicts, allowed = {}, true
  for i, t in ipairs(throttles) do
    local outcome, wait = judge(rings[i], t, now, cost)
    verdicts[i] = {outcome, wait}
    allowed = allowed and outcome == ADMITTED
  end

  -- A peek answers as the hit would: it reports the recording and the block
  -- it skips (MemoryStorage does the same).
  local commit = mode == 'hit'
  local recorded = allowed and cost > 0
  local reply, written, index_ttl_ms = {now}, {}, 0
  for i, t in ipairs(throttles) do
    local ring, outcome, wait = rings[i], verdicts[i][1], verdicts[i][2]
    local expires_in = 0
    if ring.in_window > 0 then
      expires_in = slot(ring, ring.cap - ring.in_window) + t.ttl_us - now
    elseif recorded then
      expires_in = t.ttl_us
    end

    local blocked, last = ring.blocked > now, nil
    if recorded and commit then
      record(ring, t.limit, now, cost)
      last = now
    elseif outcome == LIMIT_REACHED and t.block_us > 0 then
      blocked, wait = true, math.max(wait, t.block_us)
      if commit then
        ring.blocked = now + t.block_us
        write_header(ring)
        flush(ring)
        last = newest(ring)
      end
    end

    if last ~= nil then
      written[#written + 1] = t.name
      index_ttl_ms = math.max(index_ttl_ms, expire(ring, t, last, now, clock_us, explicit))
    end

    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3] = outcome, ring.in_window, wait
    reply[n + 4], reply[n + 5] = expires_in, recorded and 1 or 0
    reply[n + 6] = blocked and 1 or 0
  end

  if #written > 0 then
    update_index(keys[1], written, index_ttl_ms)
  end

  return reply
end

--[[
Delete every key of one identifier: keys[1] is its index, the rest the rings
the caller read from it. If the index names a ring not among them (a throttle
first used since), nothing is deleted and the index text is returned so the
caller can try again with the full list; otherwise the number deleted.
]]
local function reset(keys, args)
  local listed = redis.call('GET', keys[1])
  if listed then
    local declared = {}
    for i = 2, #keys do
      declared[keys[i]] = true
    end

    for name in string.gmatch(listed, '%S+') do
      if not declared[keys[1] .. ':' .. name] then
        return listed
      end
    end
  end

  return redis.call('DEL', unpack(keys))
end

-- Registration: used by FUNCTION LOAD only; everything from the next line on
-- is dropped from the EVALSHA body.
redis.register_function('swt_v1_decide', decide)
redis.register_function('swt_v1_reset', reset)
