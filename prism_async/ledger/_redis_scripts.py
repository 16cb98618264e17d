"""The Lua scripts of :class:`~prism_async.ledger.RedisLedger`: each write that changes more
than one key is one script, so it is atomic; the compare-and-set compares the version ``v``."""

__all__ = ["INSERT", "SWAP", "UNSETTLED"]

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
