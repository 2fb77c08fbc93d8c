-- GCRA for every quota of one decision, atomically, on the server's clock;
-- gcra.lua is the same for one quota.
-- KEYS[i]: the theoretical arrival time (TAT, microseconds) of quota i.
-- ARGV[3i-2], ARGV[3i-1], ARGV[3i]: quota i's cost * emission interval
-- (us), its tolerance minus that (us, may be negative), and the TTL (ms) of
-- its key written from a full bucket.
-- Returns {allowed (1 or 0), d_1, ..., d_n} with d_i = max(TAT_i - now, 0):
-- the client derives the binding quota and the rest. A denial writes
-- nothing; an allowance sets every TAT with a TTL that ends when the bucket
-- is full again, so idle keys vanish.
-- Whole numbers go to redis.call as strings from string.format('%d'), as in
-- gcra.lua: a number is formatted by Redis, as %.17g (an exponent from 1e17
-- on, which a TAT of a slow bucket reaches) or, on newer Redis, as the
-- shortest text (an exponent for round numbers), and SET PX refuses an
-- exponent.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local out = {1}
for i = 1, #KEYS do
  local tat = redis.call('GET', KEYS[i])
  local d = 0
  if tat then
    d = tat - now
    if d < 0 then d = 0 end
  end
  out[i + 1] = d
  if d > tonumber(ARGV[3 * i - 1]) then out[1] = 0 end
end
if out[1] == 0 then return out end
for i = 1, #KEYS do
  local d = out[i + 1]
  if d > 0 then
    local nxt = d + ARGV[3 * i - 2]
    local ms = string.format('%d', (nxt + 999) / 1000)
    redis.call('SET', KEYS[i], string.format('%d', now + nxt), 'PX', ms)
  else
    redis.call('SET', KEYS[i], string.format('%d', now + ARGV[3 * i - 2]), 'PX', ARGV[3 * i])
  end
end
return out
