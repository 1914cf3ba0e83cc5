-- KEYS[1]: the cart. ARGV: now (ms), ttl (ms), then pairs (variant, quantity or ''): a
-- line goes when its quantity is the one named, or whatever it is with ''.
local key, now, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local at = redis.call('HGET', key, 'at')
if not at then return 0 end
if tonumber(at) + ttl <= now then
  redis.call('DEL', key)
  return 0
end
local removed = 0
for i = 3, #ARGV, 2 do
  local field = 'v:' .. ARGV[i]
  local entry = redis.call('HGET', key, field)
  if entry and (ARGV[i + 1] == '' or string.match(entry, '^[^:]+:([^:]+):') == ARGV[i + 1]) then
    removed = removed + redis.call('HDEL', key, field)
  end
end
local left = 0
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, 2) == 'v:' then left = left + 1 end
end
if left == 0 then
  redis.call('DEL', key)
elseif removed > 0 then
  redis.call('HSET', key, 'at', tostring(now))
  redis.call('PEXPIRE', key, ttl + 86400000)
end
return removed
