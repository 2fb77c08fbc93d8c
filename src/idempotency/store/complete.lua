-- Compare-token-and-set: writes the outcome only if the caller's claim
-- (ARGV[1], its token) still holds KEYS[1]; a stale holder writes nothing.
-- ARGV[2] ttl ms, ARGV[3] state ('c' kept, 'n' not kept), ARGV[4] status,
-- ARGV[5] headers, ARGV[6] body, ARGV[7] trailers ('' when the body had
-- none: no field is written, so such a record is as it always was)
-- The ttl is checked before anything is written: a PEXPIRE that failed
-- after the HSET would leave a completed record with the lease's expiry.
local ttl = tonumber(ARGV[2])
if not (ttl and ttl >= 1 and ttl <= 9007199254740991 and ttl % 1 == 0) then
  return redis.error_reply('ERR palisade: ttl out of range')
end
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[2] ~= ARGV[1] then
  return 0
end
-- Already completed by this claim: a retry of a completion whose reply was
-- lost. It landed; say so, and write nothing again.
if r[1] ~= 'i' then
  return 1
end
redis.call('HSET', KEYS[1], 's', ARGV[3], 'st', ARGV[4], 'h', ARGV[5], 'b', ARGV[6])
if ARGV[7] and ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'tr', ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
