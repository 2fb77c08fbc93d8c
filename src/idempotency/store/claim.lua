-- Returns the record of KEYS[1] if it has one, else claims it: both in one
-- atomic step, so two duplicates can never both claim.
-- KEYS[1] the record (hash), KEYS[2] the key's fencing counter (same slot).
-- ARGV[1] fingerprint, ARGV[2] token, ARGV[3] lease ms, ARGV[4] counter ttl ms
-- Every number is checked before anything is written, so a bad argument
-- fails the script without leaving half a record.
local function ms(v)
  local n = tonumber(v)
  return n and n >= 1 and n <= 9007199254740991 and n % 1 == 0
end
if not ms(ARGV[3]) or not ms(ARGV[4]) then
  return redis.error_reply('ERR palisade: lease or counter ttl out of range')
end
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'st', 'h', 'b', 't', 'f', 'tr')
if r[1] then
  -- The same claim sent again (its first reply was lost) gets it again.
  if r[1] == 'i' and r[6] == ARGV[2] then
    return {'claimed', tonumber(r[7])}
  end
  -- A record written without trailers has no 'tr': a nil reply for it.
  return {r[1], r[2], redis.call('PTTL', KEYS[1]), r[3], r[4], r[5], r[8]}
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
