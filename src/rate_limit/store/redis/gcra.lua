-- GCRA for one quota, atomically, on the server's clock: the common case,
-- kept lean (every piece of Lua costs on Redis's one thread). Several
-- quotas go through gcra_many.lua, which decides the same way.
-- KEYS[1]: the theoretical arrival time (TAT, microseconds since the epoch).
-- ARGV[1]: cost * emission interval (us); ARGV[2]: tolerance minus that,
-- how far ahead of now the TAT may be for the request to pass (us, may be
-- negative); ARGV[3]: the TTL (ms) of a key written from a full bucket.
-- Returns d = max(TAT - now, 0) if allowed, -1 - d if denied: the client
-- derives the rest. A denial writes nothing; an allowance sets the TAT with
-- a TTL that ends when the bucket is full again, so idle keys vanish.
-- Strings from ARGV and GET take part in arithmetic as they are (Lua
-- converts them). A number passed to redis.call is formatted by Redis as a
-- float (%.17g), which costs more than the rest of the script's arithmetic:
-- whole numbers go as strings from string.format('%d') (a C long: the client
-- caps every argument at 2^62 us, so TATs stay below 2^63). The common path
-- passes the precomputed TTL string. A TAT that is not a number (only this
-- store writes these keys) fails the script.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tat = redis.call('GET', KEYS[1])
if tat then
  local d = tat - now
  if d > 0 then
    if d > tonumber(ARGV[2]) then return -1 - d end
    local nxt = d + ARGV[1]
    local ms = string.format('%d', (nxt + 999) / 1000)
    redis.call('SET', KEYS[1], string.format('%d', now + nxt), 'PX', ms)
    return d
  end
end
-- A full bucket (no TAT, or one in the past).
if tonumber(ARGV[2]) < 0 then return -1 end
redis.call('SET', KEYS[1], string.format('%d', now + ARGV[1]), 'PX', ARGV[3])
return 0
