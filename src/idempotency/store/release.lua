-- Frees KEYS[1] only if the caller's claim (token ARGV[1]) still holds it.
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'i' or r[2] ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
