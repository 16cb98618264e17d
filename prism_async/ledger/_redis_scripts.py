"""The Lua scripts of :class:`~prism_async.ledger.RedisLedger`: each write that changes more
than one key is one script, so it is atomic; the compare-and-set compares the version ``v``."""

__all__ = [
    "ADD_CHARGE",
    "ADD_DURATIONS",
    "ADMIT",
    "BUDGET",
    "CHARGES",
    "INSERT",
    "RELEASE",
    "RESERVE",
    "SWAP",
    "UNSETTLED",
]

# Every write also gives its key the next change number in the ``changes`` sorted set (one
# member per key, scored by its latest change): the feed of ``Ledger.changes``.

# The ``unsettled`` set indexes the keys whose state is ``sending`` or ``ambiguous``, so the
# rows reconciliation looks at are found without reading the whole ledger.
UNSETTLED = """
if ARGV[%d] == 'sending' or ARGV[%d] == 'ambiguous' then
  redis.call('SADD', KEYS[%d], ARGV[%d])
else
  redis.call('SREM', KEYS[%d], ARGV[%d])
end
"""

# KEYS: row, order, claimed, changes, unsettled; ARGV: version, doc, seq member, ids json, state
INSERT = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2])
local seq = redis.call('INCR', KEYS[2] .. ':seq')
redis.call('ZADD', KEYS[2], seq, ARGV[3])
for _, id in ipairs(cjson.decode(ARGV[4])) do redis.call('SADD', KEYS[3], id) end
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[4] .. ':seq'), ARGV[3])
"""
    + UNSETTLED % (5, 5, 5, 3, 5, 3)
    + """
return 1
"""
)

# KEYS: row, claimed, changes, unsettled; ARGV: expected version, new version, doc, old ids
# json, new ids json, key, state
SWAP = (
    """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'doc', ARGV[3])
for _, id in ipairs(cjson.decode(ARGV[4])) do redis.call('SREM', KEYS[2], id) end
for _, id in ipairs(cjson.decode(ARGV[5])) do redis.call('SADD', KEYS[2], id) end
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[3] .. ':seq'), ARGV[6])
"""
    + UNSETTLED % (7, 7, 4, 6, 4, 6)
    + """
return 1
"""
)

# -- money: charges, prices, budgets, reservations, the 402 pause (see ``_redis_money``) ------
# Numbers travel as text (Python's repr of a float, which strtod reads back exactly); sums go
# back as '%.17g' text, since a Lua number returned to Redis is cut to an integer.

# A budget's settings, what it spent in its window and what it holds reserved. KEYS[1..5]:
# budget hash (max, per), spent zset (score at, member '<credits>:<id>'), totals hash (name ->
# lifetime sum), held hash (id -> '<credits> <expires|-> <nonce> <=|?shape>': '?' marks a probe,
# which counts at its shape's price once that is learnt), prices hash (shape -> '<credits>
# <samples>').
_BUDGET_OF = """
local function fmt(x) return string.format('%.17g', x) end
local function parse_held(value)
  return string.match(value, '^(%S+) (%S+) (%S+) (.*)$')
end
local function budget_of(name, now, day_start, hour_start)
  local settings = redis.call('HMGET', KEYS[1], 'max', 'per')
  if not settings[1] then return nil end
  local per = settings[2] or ''
  local spent = 0
  if per == 'day' or per == 'hour' then
    local start = hour_start
    if per == 'day' then start = day_start end
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], start, '+inf')) do
      spent = spent + tonumber(string.match(member, '^[^:]+'))
    end
  else
    spent = tonumber(redis.call('HGET', KEYS[3], name) or '0')
  end
  local reserved = 0
  local held = redis.call('HGETALL', KEYS[4])
  for i = 2, #held, 2 do
    local credits, expires, _, probe = parse_held(held[i])
    if expires == '-' or tonumber(expires) > now then
      if string.sub(probe, 1, 1) == '?' then
        local price = redis.call('HGET', KEYS[5], string.sub(probe, 2))
        if price then reserved = reserved + tonumber(string.match(price, '^%S+')) end
      else
        reserved = reserved + tonumber(credits)
      end
    end
  end
  return {settings[1], per, fmt(spent), fmt(reserved), spent, reserved}
end
"""

# ARGV: name, now, day start, hour start. Returns nil (no budget) or max, per, spent, reserved.
BUDGET = (
    _BUDGET_OF
    + """
local b = budget_of(ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4])
if not b then return nil end
return {b[1], b[2], b[3], b[4]}
"""
)

# KEYS: budget, spent, totals, held, prices, reservations (id -> json), probes of the shape
# (id -> '<probe_until|-> <expires|->'). ARGV: name, now, day start, hour start, id, credits,
# probe '1'|'0', expires|-, json, nonce, shape, probe_until|-. Returns the verdict, then the
# budget before (none when there is no budget). A probe fits while its shape has no price and
# no other probe of it is within its probe_until (and not lapsed). The nonce is the caller's,
# the same for every retry of one call: a reservation found held with it was made by an
# attempt whose answer was lost, so it is "reserved".
RESERVE = (
    _BUDGET_OF
    + """
local now = tonumber(ARGV[2])
local b = budget_of(ARGV[1], now, ARGV[3], ARGV[4])
if not b then return {'refused'} end
local id, probe = ARGV[5], ARGV[7] == '1'
if redis.call('HEXISTS', KEYS[6], id) == 1 then
  local mine = redis.call('HGET', KEYS[4], id)
  if mine and select(3, parse_held(mine)) == ARGV[10] then
    return {'reserved', b[1], b[2], b[3], b[4]}
  end
  return {'held', b[1], b[2], b[3], b[4]}
end
local used, cap = b[5] + b[6], tonumber(b[1])
local fits
if probe then
  fits = used < cap and redis.call('HEXISTS', KEYS[5], ARGV[11]) == 0
  if fits then
    for _, other in ipairs(redis.call('HVALS', KEYS[7])) do
      local until_, expires = string.match(other, '^(%S+) (%S+)$')
      if until_ ~= '-' and tonumber(until_) > now
          and (expires == '-' or tonumber(expires) > now) then
        fits = false
        break
      end
    end
  end
else
  fits = used + tonumber(ARGV[6]) <= cap + 1e-9
end
if not fits then return {'refused', b[1], b[2], b[3], b[4]} end
redis.call('HSET', KEYS[6], id, ARGV[9])
local what = '='
if probe then
  what = '?' .. ARGV[11]
  redis.call('HSET', KEYS[7], id, ARGV[12] .. ' ' .. ARGV[8])
end
redis.call('HSET', KEYS[4], id, ARGV[6] .. ' ' .. ARGV[8] .. ' ' .. ARGV[10] .. ' ' .. what)
return {'reserved', b[1], b[2], b[3], b[4]}
"""
)

# Drop a reservation: its json names its budget and shape, whose held hash and probe index are
# the prefix's keys 'money:held:<budget>' and 'money:probes:<shape>'.
_DROP = """
local function drop(reservations, prefix, id)
  local doc = redis.call('HGET', reservations, id)
  if not doc then return 0 end
  local r = cjson.decode(doc)
  redis.call('HDEL', reservations, id)
  redis.call('HDEL', prefix .. 'money:held:' .. r['budget'], id)
  redis.call('HDEL', prefix .. 'money:probes:' .. r['charge']['shape'], id)
  return 1
end
"""

# KEYS: reservations; ARGV: prefix, id.
RELEASE = _DROP + "return drop(KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS: charges (id -> json), charges by time (zset), reservations, prices (shape -> '<credits>
# <samples>'), totals, the charge's budget's spent zset. ARGV: prefix, id, at, json, credits,
# shape, budget|'', base shape|'', per-video credits. Returns 1 (recorded), 0 (recorded already).
ADD_CHARGE = (
    _DROP
    + """
local function learn(shape, credits)
  local old = redis.call('HGET', KEYS[4], shape)
  local samples = 1
  if old then samples = tonumber(string.match(old, '%d+$')) + 1 end
  redis.call('HSET', KEYS[4], shape, credits .. ' ' .. string.format('%d', samples))
end
local id = ARGV[2]
drop(KEYS[3], ARGV[1], id)
if redis.call('HSETNX', KEYS[1], id, ARGV[4]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], id)
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[5] .. ':' .. id)
  local total = tonumber(redis.call('HGET', KEYS[5], ARGV[7]) or '0') + tonumber(ARGV[5])
  redis.call('HSET', KEYS[5], ARGV[7], string.format('%.17g', total))
end
learn(ARGV[6], ARGV[5])
if ARGV[8] ~= '' then learn(ARGV[8], ARGV[9]) end
return 1
"""
)

# KEYS: charges, charges by time; ARGV: since|-inf, the last id read|'', page size. The next
# page, oldest first (ties by id), from the rank after the last id read: its ids, their json.
CHARGES = """
local ids
if ARGV[2] == '' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
else
  local rank = redis.call('ZRANK', KEYS[2], ARGV[2])
  if not rank then return {{}, {}} end
  ids = redis.call('ZRANGE', KEYS[2], rank + 1, rank + tonumber(ARGV[3]))
end
if #ids == 0 then return {{}, {}} end
return {ids, redis.call('HMGET', KEYS[1], unpack(ids))}
"""

# KEYS: pause (until, probe: the probe's lease end|''); ARGV: now, now + the probe's lease.
# No pause: nothing written.
ADMIT = """
local pause = redis.call('HMGET', KEYS[1], 'until', 'probe')
if not pause[1] then return {'open'} end
local now = tonumber(ARGV[1])
if tonumber(pause[1]) > now then return {'paused', pause[1]} end
if pause[2] and pause[2] ~= '' and tonumber(pause[2]) > now then
  return {'paused', pause[2]}
end
redis.call('HSET', KEYS[1], 'probe', ARGV[2])
return {'probe'}
"""

# -- learnt durations (see ``_redis_timings``) -----------------------------------------------

# KEYS: the keys zset (key -> the number of its latest write), the write counter, then the list
# of each sample's key (newest first), one per sample. ARGV: the prefix of those lists, window,
# cap, then each sample's key and seconds. Each list keeps its `window` newest; beyond `cap`
# keys, those written least recently go, with their lists.
ADD_DURATIONS = """
local window, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local list = 3
for i = 4, #ARGV, 3 do
  local seq = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[list], ARGV[i + 2], ARGV[i + 1] .. '|' .. seq)
  redis.call('ZREMRANGEBYRANK', KEYS[list], 0, -window - 1)
  redis.call('ZADD', KEYS[1], seq, ARGV[i])
  list = list + 1
end
local over = redis.call('ZCARD', KEYS[1]) - cap
if over > 0 then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('DEL', ARGV[1] .. key)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
return 1
"""
