-- The fleet-wide state of a circuit breaker shared across instances, changed
-- atomically on Redis's clock (so instances' clocks do not matter).
-- KEYS[1]: a hash: state (closed | open | half_open), until (when the open
-- wait ends, ms since the epoch), epoch (grows with every change, even across
-- a restart of Redis: it starts from Redis's clock in microseconds).
-- KEYS[2]: the probe lease: the token of the one instance probing for the
-- fleet, with a PX expiry of the probe's time limit.
-- ARGV[1]: read | open | probe | close | release; ARGV[2]: the channel changes are
-- published on; ARGV[3]: the caller's token; ARGV[4]: the open wait (open) or
-- the lease (probe), in ms.
-- open: opens for ARGV[4] ms and drops the lease. probe: takes the lease if
-- the breaker is open and its wait is over (or half-open and the lease
-- expired), and turns it half-open. close: closes a half-open breaker, only
-- for the lease's holder (fenced). release: the holder, which got no call to
-- probe with, gives the lease back: open with the wait over. Every change is published as
-- "<epoch> <state> <ms left> <holder>".
-- Returns {applied (0 | 1), epoch, state, ms left (of the open wait, or of
-- the lease when half-open), holder (or "")}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local op = ARGV[1]
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local holder = redis.call('GET', KEYS[2]) or ''
local DAY = 86400000

local function left()
  if state == 'open' then
    return math.max(tonumber(redis.call('HGET', KEYS[1], 'until') or '0') - now, 0)
  elseif state == 'half_open' then
    return math.max(redis.call('PTTL', KEYS[2]), 0)
  end
  return 0
end

local function record()
  return {string.format('%d', epoch), state, string.format('%d', left()), holder}
end

local function change(to)
  local next = t[1] * 1000000 + t[2]
  if next <= epoch then
    next = epoch + 1
  end
  epoch = next
  state = to
  redis.call('HSET', KEYS[1], 'state', to, 'epoch', string.format('%d', epoch))
end

local function publish()
  redis.call('PUBLISH', ARGV[2], table.concat(record(), ' '))
end

local function reply(applied)
  local r = record()
  table.insert(r, 1, applied)
  return r
end

if op == 'open' then
  local wait = tonumber(ARGV[4])
  redis.call('DEL', KEYS[2])
  holder = ''
  change('open')
  redis.call('HSET', KEYS[1], 'until', string.format('%d', now + wait))
  redis.call('PEXPIRE', KEYS[1], wait + DAY)
  publish()
  return reply(1)
elseif op == 'probe' then
  if state == 'closed' or holder ~= '' or (state == 'open' and left() > 0) then
    return reply(0)
  end
  redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[4]))
  holder = ARGV[3]
  change('half_open')
  publish()
  return reply(1)
elseif op == 'close' then
  if state ~= 'half_open' or holder ~= ARGV[3] then
    return reply(0)
  end
  redis.call('DEL', KEYS[2])
  holder = ''
  change('closed')
  redis.call('PEXPIRE', KEYS[1], DAY)
  publish()
  return reply(1)
elseif op == 'release' then
  if state ~= 'half_open' or holder ~= ARGV[3] then
    return reply(0)
  end
  redis.call('DEL', KEYS[2])
  holder = ''
  change('open')
  redis.call('HSET', KEYS[1], 'until', string.format('%d', now))
  publish()
  return reply(1)
end
return reply(0)
