-- GCRA for every quota of one decision, atomically, on the server's clock.
-- KEYS[i]: the theoretical arrival time (TAT, microseconds) of quota i.
-- ARGV[1]: cost; ARGV[2i], ARGV[2i+1]: emission interval and tolerance
-- (interval * burst) of quota i, in microseconds.
-- Returns {allowed, binding quota (0-based), remaining, reset_us, retry_us}.
-- A denial writes nothing; an allowance sets every TAT with a TTL that ends
-- when the bucket is full again, so idle keys vanish.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local n = #KEYS
local tats = {}
local deny, wait = 0, 0
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  if tat < now then tat = now end
  tats[i] = tat
  local over = tat + cost * interval - (now + tau)
  if over > wait then
    deny, wait = i, over
  end
end
if deny > 0 then
  local interval = tonumber(ARGV[2 * deny])
  local tau = tonumber(ARGV[2 * deny + 1])
  local tat = tats[deny]
  return {0, deny - 1, math.floor((now + tau - tat) / interval), tat - now, wait}
end
local best, best_rem, best_reset = 0, 0, 0
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local nxt = tats[i] + cost * interval
  local ttl = math.ceil((nxt - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[i], nxt, 'PX', ttl)
  local rem = math.floor((now + tau - nxt) / interval)
  local reset = nxt - now
  if best == 0 or rem < best_rem or (rem == best_rem and reset > best_reset) then
    best, best_rem, best_reset = i, rem, reset
  end
end
return {1, best - 1, best_rem, best_reset, 0}
