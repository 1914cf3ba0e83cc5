-- ARGV: hold id, variant, units. A downward adjustment holds what it takes, as an order
-- holds its lines, and is refused when fewer are left.
local meta = redis.call('HMGET', meta_key, 'state', 'epoch')
if meta[1] ~= 'ready' then return {'rebuilding'} end
local id, variant, units = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', base .. 'u:' .. id) == 1 then return {'already_held'} end
local left = tonumber(redis.call('HGET', avail_key, variant) or '0')
if left < units then return {'short', tostring(left)} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', avail_key, variant, -units)
redis.call('HSET', base .. 'u:' .. id, 'epoch', meta[2], 'at', now, 'variant', variant,
  'units', units)
redis.call('ZADD', base .. 'uholds', now, id)
return {'held'}
