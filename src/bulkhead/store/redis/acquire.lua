-- Takes one lease of a fleet-wide bulkhead, atomically, on the server's
-- clock (so instances' clocks do not matter).
-- KEYS[1]: a sorted set of leases: member = a holder's unique token, score =
-- when its lease expires (ms since the epoch, Redis's TIME).
-- ARGV[1]: the token; ARGV[2]: the limit; ARGV[3]: the lease (ms).
-- Returns 0 when the lease is taken (or was already held by this token: a
-- retried call), otherwise the ms until the earliest lease expires (>= 1).
-- The key's TTL follows its latest lease, so an abandoned key disappears.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1])
  or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(last[2] - now, lease))
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(first[2] - now, 1)
