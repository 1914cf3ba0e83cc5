-- KEYS[1]: the cart. ARGV: now (ms), ttl (ms), then triples (variant, product, quantity).
-- Takes every line out when each is there as named; otherwise changes nothing. 1 or 0.
local key, now, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local at = redis.call('HGET', key, 'at')
if not at or tonumber(at) + ttl <= now then return 0 end
for i = 3, #ARGV, 3 do
  local entry = redis.call('HGET', key, 'v:' .. ARGV[i])
  if not entry then return 0 end
  local product, qty = string.match(entry, '^([^:]+):([^:]+):')
  if product ~= ARGV[i + 1] or qty ~= ARGV[i + 2] then return 0 end
end
for i = 3, #ARGV, 3 do
  redis.call('HDEL', key, 'v:' .. ARGV[i])
end
local left = 0
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, 2) == 'v:' then left = left + 1 end
end
if left == 0 then redis.call('DEL', key) else redis.call('HSET', key, 'at', tostring(now)) end
return 1
