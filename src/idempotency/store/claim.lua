-- Returns the record of KEYS[1] if it has one, else claims it: both in one
-- atomic step, so two duplicates can never both claim.
-- KEYS[1] the record (hash), KEYS[2] the key's fencing counter (same slot).
-- ARGV[1] fingerprint, ARGV[2] token, ARGV[3] lease ms, ARGV[4] counter ttl ms
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b')
if r[1] then
  return {r[1], r[2], redis.call('PTTL', KEYS[1]), r[3], r[4], r[5]}
end
local fence = redis.call('INCR', KEYS[2])
-- The counter outlives every lease it numbered, so a later claim never
-- gets a smaller number than a stale holder that may still be running.
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('HSET', KEYS[1], 's', 'i', 'fp', ARGV[1], 't', ARGV[2], 'f', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'claimed', fence}
