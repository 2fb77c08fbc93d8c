-- Compare-token-and-PEXPIRE: extends the lease of KEYS[1] only if the
-- caller's claim (ARGV[1], its token) still holds it; a stale holder, or
-- one whose key was completed or released, extends nothing.
-- KEYS[2] the key's fencing counter (same slot).
-- ARGV[2] lease ms, ARGV[3] counter ttl ms
local function ms(v)
  local n = tonumber(v)
  return n and n >= 1 and n <= 9007199254740991 and n % 1 == 0
end
if not ms(ARGV[2]) or not ms(ARGV[3]) then
  return redis.error_reply('ERR palisade: lease or counter ttl out of range')
end
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'i' or r[2] ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
-- The counter keeps outliving the lease it numbered.
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
