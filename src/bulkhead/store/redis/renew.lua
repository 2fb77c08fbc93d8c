-- Renews this process's leases of one bulkhead in one round trip.
-- KEYS[1]: the sorted set of leases; ARGV[1]: the lease (ms); ARGV[2..]:
-- the tokens held. Expired leases are dropped first, so a lease that ran
-- out is never revived: its slot may have been given to another.
-- Returns the tokens that were gone (their holders ran past their lease).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIRE', KEYS[1], math.max(last[2] - now, 1))
end
return gone
