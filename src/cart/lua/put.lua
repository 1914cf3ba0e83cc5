-- KEYS[1]: the cart. ARGV: now (ms, the service's clock), ttl (ms), variant, product,
-- quantity, most lines. Fields: 'at' (last change), 'n' (lines put so far, for their order),
-- 'v:<variant>' = '<product>:<quantity>:<order>'.
local key, now, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local at = redis.call('HGET', key, 'at')
if at and tonumber(at) + ttl <= now then redis.call('DEL', key) end
local field = 'v:' .. ARGV[3]
local existing = redis.call('HGET', key, field)
local seq
if existing then
  seq = string.match(existing, '^[^:]+:[^:]+:(.+)$')
else
  local count = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'v:' then count = count + 1 end
  end
  if count >= tonumber(ARGV[6]) then return 'full' end
  seq = tostring(redis.call('HINCRBY', key, 'n', 1))
end
redis.call('HSET', key, field, ARGV[4] .. ':' .. ARGV[5] .. ':' .. seq, 'at', tostring(now))
-- Redis drops the key a day after the cart expired (the service's clock decides before).
redis.call('PEXPIRE', key, ttl + 86400000)
return 'done'
