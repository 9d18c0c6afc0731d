#!lua name=swt
--[[
sliding-window-throttler: the decision of one hit over one or more throttles.

This file is loaded with FUNCTION LOAD as the library `swt_<digest>`, where
<digest> is the first 8 hex digits of the SHA-1 of this file: _redis_common.py
writes that name into the shebang and the registered function names at load
time, so changed code is always a new library and a server never runs an old
one under a name it already knows. Without functions (Redis 6, or
enable_redis_functions=False) the same text runs through EVALSHA:
_redis_common.py drops the shebang and the registration block at the end and
appends `return decide(KEYS, ARGV)` (or `reset`).

Units: every time is an integer number of MICROSECONDS (the server's TIME, or
the caller's now_us); windows and block durations arrive in MILLISECONDS
(ttl_ms, block_ms) and are turned into microseconds here; key expiry is set in
milliseconds. Lua numbers are doubles: integers below 2^53 are exact, so times
stay numbers and leave as integer replies or through string.format('%d'); never
tostring() or `..` a time (that keeps 14 significant digits).

It mirrors core/sliding_window.py `judge` and MemoryStorage `_decide` /
`_record`: the non-empty slots of a ring hold exactly the times that
MemoryStorage keeps for the pair (the last `limit` admissions), so both decide
identically (the Python side builds the records with core/decision.py
`make_record`).

Keys, all in the slot of the identifier's hash tag:
  keys[1]       the index: the identifier's throttle names, " a b c "
  keys[1 + i]   the ring of throttle i, named keys[1] .. ":" .. name
The index is rewritten only when a ring is created; on other writes one PTTL
shows whether it still outlives the written rings, and it is extended past
them about once a second, so reset() finds every ring. Every key has an
expiry.

Ring: one string per (identifier, throttle) pair, fixed size:
  header, 29 bytes, big-endian:
    version u8 | capacity u32 | head u32 | count u32 | base f64 | blocked_until f64
  then `capacity` slots of 6 bytes (u48): t - base, or 0 for an empty slot.
The slot at `head` is the oldest (logical index 0); reading on from there the
ring is sorted, empty slots first, so the non-empty ones are the logical range
[capacity - count, capacity). `base` keeps slot values small: a rebuild (a new
limit, or after 2^48 us = 8.9 years) moves it just below the oldest kept time.

Reads and writes: a ring of at most WHOLE slots is read with one GET and
searched in Lua; a larger one is read by ranges: its header, then one GETRANGE
per binary-search probe until CHUNK slots are left, which one GETRANGE reads,
so a decision costs O(log limit) commands whatever the number of hits in the
window. Only the changed slots and the header are written back (SETRANGE); a
new or rebuilt ring is written whole, with its expiry, by one SET. O(limit)
work happens only on a rebuild.
]]

local VERSION = 1
local HEADER = 29
local HEADER_FORMAT = '>BI4I4I4dd'
local SLOT = 6
local SLOT_FORMAT = '>I6'
local SPAN = 2 ^ 48
-- Rings up to this many slots are read whole: one GET of under 1 KB costs
-- less than a few GETRANGEs, while Lua pays for every byte it reads.
local WHOLE = 128
-- A larger ring is read by ranges: first the newest slot and the PREFETCH
-- oldest (all of them when CHUNK or fewer), then a range of CHUNK slots once
-- the search has narrowed to that.
local PREFETCH = 8
local CHUNK = 32
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

-- An empty slot. (Libraries see no globals while loading, struct included.)
local EMPTY = '\0\0\0\0\0\0'

local function int(x)
  return string.format('%d', x)
end

-- A whole number in [low, high]: x % 1 is NaN for infinities and NaN.
local function is_int(x, low, high)
  return x ~= nil and x % 1 == 0 and x >= low and x <= high
end

-- The message is built only here, on failure: the checks stay cheap.
local function bad(...)
  error({err = 'SWT bad argument: ' .. table.concat({...})})
end

local function is_name(name)
  return #name <= 64 and string.find(name, '^[%w_%.%-]+$') ~= nil
end

-- Name what is wrong with throttle i, which failed the test in
-- parse_throttles.
local function refuse_throttle(keys, rings, i, name, limit, ttl_ms, block_ms)
  if not is_name(name) then
    bad('throttle name ', name)
  end

  for j = 1, i - 1 do
    if rings[j].name == name then
      bad('throttle ', name, ' given twice')
    end
  end

  if keys[1 + i] ~= keys[1] .. ':' .. name then
    bad('key ', keys[1 + i], ' for ', name)
  end

  if not is_int(limit, 1, MAX_LIMIT) then
    bad('limit of ', name)
  end

  if not is_int(ttl_ms, 1, MAX_DURATION_MS) then
    bad('ttl_ms of ', name)
  end

  bad('block_ms of ', name)
end

-- One table per throttle: its arguments, then its ring's state (see `open`).
local function parse_throttles(keys, args)
  local n = (#args - 3) / 4
  if n < 1 or n ~= math.floor(n) then
    bad('expected 3 + 4 * n arguments, got ', #args)
  end

  if #keys ~= n + 1 then
    bad('expected ', n + 1, ' keys, got ', #keys)
  end

  local index, rings = keys[1], {}
  for i = 1, n do
    local at = 4 * i
    local name, limit = args[at], tonumber(args[at + 1])
    local ttl_ms, block_ms = tonumber(args[at + 2]), tonumber(args[at + 3])
    -- All the checks of the next function, as one test without calls.
    local ok = limit and ttl_ms and block_ms and limit % 1 == 0 and ttl_ms % 1 == 0
      and block_ms % 1 == 0 and limit >= 1 and limit <= MAX_LIMIT and ttl_ms >= 1
      and ttl_ms <= MAX_DURATION_MS and block_ms >= 0 and block_ms <= MAX_DURATION_MS
      and keys[1 + i] == index .. ':' .. name and #name <= 64
      and string.find(name, '^[%w_%.%-]+$')
    for j = 1, i - 1 do
      ok = ok and rings[j].name ~= name
    end

    if not ok then
      refuse_throttle(keys, rings, i, name, limit, ttl_ms, block_ms)
    end

    -- Every field named here, so that the table is sized once.
    rings[i] = {key = keys[1 + i], name = name, limit = limit, ttl_us = ttl_ms * 1000,
                block_us = block_ms * 1000, cap = 0, head = 0, count = 0, base = 0,
                blocked = NO_BLOCK, created = true, whole = true, raw = false,
                chunks = false, first = 0, in_window = 0, outcome = 0, wait = 0,
                now = 0, rebuilt = nil}
  end

  return rings
end

-- Read n logical slots from `from` on, modulo the capacity (so [cap - 1,
-- cap + 8) is the newest slot and the 8 oldest of a full ring), with one
-- GETRANGE (two where the string ends first), and keep them for `slot`.
local function load(ring, from, n)
  local at = (ring.head + from) % ring.cap
  local first = math.min(n, ring.cap - at)
  local bytes = redis.call('GETRANGE', ring.key, HEADER + at * SLOT,
                           HEADER + (at + first) * SLOT - 1)
  if n > first then
    bytes = bytes .. redis.call('GETRANGE', ring.key, HEADER, HEADER + (n - first) * SLOT - 1)
  end

  local chunks = ring.chunks
  chunks[#chunks + 1] = {from, n, bytes}
end

local function open(ring)
  local raw
  if ring.limit <= WHOLE then
    raw = redis.call('GET', ring.key)
  else
    raw = redis.call('GETRANGE', ring.key, 0, HEADER - 1)
  end

  if not raw or raw == '' then
    return
  end

  if #raw < HEADER or string.byte(raw, 1) ~= VERSION then
    bad('key ', ring.key, ' does not hold a version 1 ring')
  end

  local _
  _, ring.cap, ring.head, ring.count, ring.base, ring.blocked = struct.unpack(HEADER_FORMAT, raw)
  ring.created, ring.raw = false, raw
  ring.whole = #raw == HEADER + ring.cap * SLOT
  if ring.whole then
    return
  end

  if ring.limit <= WHOLE or #raw ~= HEADER then
    bad('key ', ring.key, ' does not hold a version 1 ring')
  end

  -- What every decision reads first: the newest slot and where the oldest
  -- leave the window, in one range where they lie side by side.
  local cap, count = ring.cap, ring.count
  ring.chunks = {}
  if count <= CHUNK then
    load(ring, cap - count, count)
  elseif count == cap then
    load(ring, cap - 1, math.min(PREFETCH + 1, cap))
  else
    load(ring, cap - count, PREFETCH)
  end
end

-- The time in logical slot i if read already, else nil.
local function cached(ring, i)
  if ring.whole then
    return ring.base + struct.unpack(SLOT_FORMAT, ring.raw,
                                     HEADER + ((ring.head + i) % ring.cap) * SLOT + 1)
  end

  local chunks = ring.chunks
  for c = 1, #chunks do
    local chunk = chunks[c]
    local j = (i - chunk[1]) % ring.cap
    if j < chunk[2] then
      return ring.base + struct.unpack(SLOT_FORMAT, chunk[3], j * SLOT + 1)
    end
  end

  return nil
end

-- The time in logical slot i (0 = oldest); only for i in [cap - count, cap).
local function slot(ring, i)
  local value = cached(ring, i)
  if value == nil then
    load(ring, i, 1)
    value = cached(ring, i)
  end

  return value
end

local function newest(ring)
  if ring.count == 0 then
    return nil
  end

  return slot(ring, ring.cap - 1)
end

-- The logical index of the oldest slot still in the window (cap when none).
-- It gallops from the oldest slot over what is read already (steady traffic
-- moves a hit or two out of the window per hit), then halves what is left; a
-- ring read by ranges reads the last CHUNK slots of the search at once.
local function first_in_window(ring, edge)
  local low, high, step = ring.cap - ring.count, ring.cap, 1
  while low < high do
    local probe = math.min(low + step, high) - 1
    local value = cached(ring, probe)
    if value == nil then
      break
    end

    if value > edge then
      high = probe
      break
    end

    low, step = probe + 1, step * 2
  end

  local narrowed = ring.whole
  while low < high do
    local mid = math.floor((low + high) / 2)
    if not narrowed and high - low <= CHUNK and cached(ring, mid) == nil then
      load(ring, low, high - low)
      narrowed = true
    end

    if slot(ring, mid) <= edge then
      low = mid + 1
    else
      high = mid
    end
  end

  return low
end

-- core/sliding_window.py `judge`, on a ring.
local function judge(ring, now, cost)
  local limit = ring.limit
  ring.first = first_in_window(ring, now - ring.ttl_us)
  ring.in_window = math.min(ring.cap - ring.first, limit)
  if cost > limit then
    return COST_EXCEEDS_LIMIT, NEVER
  end

  local window_wait = 0
  if ring.in_window + cost > limit then
    -- The cost-th oldest among the newest `limit` admissions must leave.
    window_wait = slot(ring, ring.cap - limit + cost - 1) + ring.ttl_us - now
  end

  if ring.blocked > now then
    return BLOCKED, math.max(ring.blocked - now, window_wait)
  end

  if window_wait > 0 then
    return LIMIT_REACHED, window_wait
  end

  return ADMITTED, 0
end

local function write_header(ring)
  redis.call('SETRANGE', ring.key, 0, struct.pack(HEADER_FORMAT, VERSION, ring.cap, ring.head,
    ring.count, ring.base, ring.blocked))
end

-- Write `cell` into logical slots [from, to), splitting where the ring wraps.
local function fill(ring, from, to, cell)
  if to <= from then
    return
  end

  local at = (ring.head + from) % ring.cap
  local n = to - from
  local before_wrap = math.min(n, ring.cap - at)
  redis.call('SETRANGE', ring.key, HEADER + at * SLOT, string.rep(cell, before_wrap))
  if n > before_wrap then
    redis.call('SETRANGE', ring.key, HEADER, string.rep(cell, n - before_wrap))
  end
end

-- A new string of `limit` slots holding the kept times and `cost` times `now`
-- (a new pair, a changed limit, or a base too far behind), left in
-- ring.rebuilt for `store` to SET. O(limit), rare. Times older than the
-- longest window can never count again: they become empty slots, which keeps
-- every slot within SPAN of the new base.
local function rebuild(ring, from, now, cost)
  local kept = {}
  if from < ring.cap then
    local raw = ring.whole and ring.raw or redis.call('GET', ring.key)
    if #raw ~= HEADER + ring.cap * SLOT then
      bad('key ', ring.key, ' does not hold a version 1 ring')
    end

    local oldest_kept = now - MAX_DURATION_MS * 1000
    for i = from, ring.cap - 1 do
      local at = HEADER + ((ring.head + i) % ring.cap) * SLOT
      local t = ring.base + struct.unpack(SLOT_FORMAT, raw, at + 1)
      if t > oldest_kept then
        kept[#kept + 1] = t
      end
    end
  end

  local limit = ring.limit
  local base = (kept[1] or now) - 1
  local count = #kept + cost
  local parts = {struct.pack(HEADER_FORMAT, VERSION, limit, 0, count, base, ring.blocked),
                 string.rep(EMPTY, limit - count)}
  for _, t in ipairs(kept) do
    parts[#parts + 1] = struct.pack(SLOT_FORMAT, t - base)
  end

  parts[#parts + 1] = string.rep(struct.pack(SLOT_FORMAT, now - base), cost)
  ring.rebuilt = table.concat(parts)
end

-- MemoryStorage `_record`: `cost` copies of `now` overwrite the oldest slots
-- (empty ones, or hits that have left the window: the hit was admitted), and a
-- changed limit keeps the newest admissions. Nothing else is dropped, so the
-- ring always holds the last `limit` admissions.
local function record(ring, now, cost)
  if ring.cap ~= ring.limit or now - ring.base >= SPAN then
    local oldest = ring.cap - ring.count
    rebuild(ring, math.max(oldest, ring.cap - ring.limit + cost), now, cost)
    return
  end

  fill(ring, 0, cost, struct.pack(SLOT_FORMAT, now - ring.base))
  ring.head = (ring.head + cost) % ring.cap
  ring.count = math.min(ring.count + cost, ring.cap)
  write_header(ring)
end

-- How expiry is set: PEXPIREAT on the server's clock, or with an explicit
-- time PEXPIRE relative to it (SET takes the same as PXAT or PX).
local function expiry_commands(explicit)
  if explicit then
    return 'PEXPIRE', 'PX'
  end

  return 'PEXPIREAT', 'PXAT'
end

-- The expiry of a written pair: the end of its window or block, whichever is
-- later; in milliseconds, from now with an explicit time, else absolute.
local function expiry(ring, last, now, explicit)
  local expires_at = math.max(last + ring.ttl_us, ring.blocked)
  if explicit then
    return math.floor((expires_at - now) / 1000) + EXPLICIT_GRACE_MS
  end

  -- A key lives while the server's millisecond clock is <= its expiry, so the
  -- floor keeps it for every microsecond before expires_at and no longer.
  return math.floor(expires_at / 1000)
end

-- Write a string and its expiry, or the expiry alone, to a key: one command
-- where SET takes PXAT (Redis 6.2; the version is known from Redis 7 on).
local function store(key, text, at, explicit, modern)
  local expire, option = expiry_commands(explicit)
  if text == nil then
    redis.call(expire, key, int(at))
  elseif modern then
    redis.call('SET', key, text, option, int(at))
  else
    redis.call('SET', key, text)
    redis.call(expire, key, int(at))
  end
end

local function list_names(listed, rings)
  local text = listed or ' '
  for _, ring in ipairs(rings) do
    if not string.find(text, ' ' .. ring.name .. ' ', 1, true) then
      text = text .. ring.name .. ' '
    end
  end

  return text
end

-- Keep the index listing every written ring and outliving it. Its names
-- change only when a ring is created (or the index went missing, say
-- evicted); otherwise one PTTL shows whether it still outlives the rings,
-- and it is extended, INDEX_SLACK_MS beyond them, about once a second.
local function update_index(index, written, created, at, explicit, clock_us, modern)
  local ttl_ms = explicit and at or at - math.floor(clock_us / 1000)
  if created then
    local listed = redis.call('GET', index)
    local text = list_names(listed, written)
    if not listed then
      store(index, text, ttl_ms + INDEX_SLACK_MS, true, modern)
      return
    end

    if text ~= listed then
      redis.call('SET', index, text, 'KEEPTTL')
    end
  end

  -- PTTL counts from the start of this call, which may be a millisecond
  -- before TIME: hence `<=`. No expiry (-1) is extended too.
  local ttl = redis.call('PTTL', index)
  if ttl == -2 then
    store(index, list_names(false, written), ttl_ms + INDEX_SLACK_MS, true, modern)
  elseif ttl <= ttl_ms then
    redis.call('PEXPIRE', index, int(ttl_ms + INDEX_SLACK_MS))
  end
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
  if mode ~= 'hit' and mode ~= 'peek' then
    bad('mode ', tostring(mode))
  end

  if not is_int(cost, 0, MAX_TIME) then
    bad('cost')
  end

  local rings = parse_throttles(keys, args)
  local explicit = args[2] ~= ''
  local clock_us = tonumber(args[2])
  if not explicit then
    local time = redis.call('TIME')
    clock_us = time[1] * 1000000 + time[2]  -- whole-number strings: exact
  end

  if not is_int(clock_us, -MAX_TIME, MAX_TIME) then
    bad('now_us')
  end

  -- Each pair's time never goes back: a clock that steps back stands still
  -- at the pair's newest admission, and every ring stays sorted. The reply
  -- gives the latest of these times.
  local latest = clock_us
  for _, ring in ipairs(rings) do
    open(ring)
    ring.now = math.max(clock_us, newest(ring) or clock_us)
    latest = math.max(latest, ring.now)
  end

  local allowed = true
  for _, ring in ipairs(rings) do
    ring.outcome, ring.wait = judge(ring, ring.now, cost)
    allowed = allowed and ring.outcome == ADMITTED
  end

  -- A peek answers as the hit would: it reports the recording and the block
  -- it skips (MemoryStorage does the same).
  local commit = mode == 'hit'
  local recorded = allowed and cost > 0
  local modern = (redis.REDIS_VERSION_NUM or 0) >= 0x060200
  local reply, written, created, index_at = {latest}, {}, false, nil
  for _, ring in ipairs(rings) do
    local now = ring.now
    local outcome, wait = ring.outcome, ring.wait
    local expires_in = 0
    if ring.in_window > 0 then
      expires_in = slot(ring, ring.cap - ring.in_window) + ring.ttl_us - now
    elseif recorded then
      expires_in = ring.ttl_us
    end

    local blocked, last = ring.blocked > now, nil
    if recorded and commit then
      record(ring, now, cost)
      last = now
    elseif outcome == LIMIT_REACHED and ring.block_us > 0 then
      blocked, wait = true, math.max(wait, ring.block_us)
      if commit then
        ring.blocked = now + ring.block_us
        write_header(ring)
        last = newest(ring)
      end
    end

    if last ~= nil then
      local at = expiry(ring, last, now, explicit)
      store(ring.key, ring.rebuilt, at, explicit, modern)
      written[#written + 1] = ring
      created = created or ring.created
      index_at = math.max(index_at or at, at)
    end

    local n = #reply
    reply[n + 1], reply[n + 2], reply[n + 3] = outcome, ring.in_window, wait
    reply[n + 4], reply[n + 5] = expires_in, recorded and 1 or 0
    reply[n + 6] = blocked and 1 or 0
  end

  if index_at ~= nil then
    update_index(keys[1], written, created, index_at, explicit, clock_us, modern)
  end

  return reply
end

--[[
Delete every key of one identifier: keys[1] is its index, the rest the rings
the caller read from it. If the index names a ring not among them (a throttle
first used since), nothing is deleted and the index text is returned so the
caller can try again with the full list; otherwise the number deleted.

Limitation: the index is the only list of an identifier's rings. If the
server evicts it (an allkeys-* or volatile-* maxmemory-policy; it has an
expiry), the next write recreates it naming only the rings that write
touched; a ring that already existed is listed again only once it has
expired and is created anew. Until then a reset without throttles misses it,
and it expires on its own at the end of its window or block. A reset naming
its throttles deletes their rings whatever the index holds.
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

-- A peek through FCALL_RO: flagged no-writes, so it answers where writes are
-- refused (memory full, CLIENT PAUSE WRITE, a replica). `decide` writes
-- nothing for a peek.
local function peek(keys, args)
  if args[1] ~= 'peek' then
    bad('mode ', tostring(args[1]), ': this entry only peeks')
  end

  return decide(keys, args)
end

-- Registration: used by FUNCTION LOAD only; everything from the next line on
-- is dropped from the EVALSHA body. _redis_common.py puts the library's name
-- in place of the `swt` prefix of each function.
redis.register_function('swt_decide', decide)
redis.register_function{function_name='swt_peek', callback=peek, flags={'no-writes'}}
redis.register_function('swt_reset', reset)
