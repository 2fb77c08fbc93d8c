-- GCRA for one-quota decisions that queued together while other round
-- trips were out, atomically, in order, on one reading of the server's
-- clock. Each decides as gcra.lua would; a later decision on the same key
-- sees what an earlier one spent. Each key is written once, at the end.
-- KEYS[i]: decision i's TAT key (microseconds since the epoch).
-- ARGV: when every decision has the same parameters (one quota, one cost:
-- the common case), just those two: their cost * emission interval (us)
-- and their tolerance minus that (us, may be negative); otherwise those
-- two for each decision, ARGV[2i-1] and ARGV[2i]. Two arguments instead of
-- 2n spare Redis parsing them and Lua interning and converting them.
-- Returns one integer per decision, as gcra.lua does: d = max(TAT - now, 0)
-- if allowed, -1 - d if denied. A denial writes nothing; every TAT written
-- gets a TTL that ends when its bucket is full again.
-- Whole numbers go to redis.call as strings: see gcra.lua.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local stored = redis.call('MGET', unpack(KEYS))
local n = #KEYS
local shared = #ARGV == 2
local inc, room = tonumber(ARGV[1]), tonumber(ARGV[2])
local tats, written, out = {}, {}, {}
for i = 1, n do
  local key = KEYS[i]
  if not shared then
    inc, room = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  end
  local tat = tats[key]
  if not tat then
    tat = stored[i]
    if tat then tat = tonumber(tat) end
  end
  local d = 0
  if tat then
    d = tat - now
    if d < 0 then d = 0 end
  end
  if d > room then
    out[i] = -1 - d
  else
    if not tats[key] then written[#written + 1] = key end
    tats[key] = now + d + inc
    out[i] = d
  end
end
for j = 1, #written do
  local key = written[j]
  local tat = tats[key]
  local ms = (tat - now + 999) / 1000
  if ms < 1 then ms = 1 end
  redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', ms))
end
return out
