-- ARGV: the epoch whose counters the log caught letting through too much. Drops the
-- sentinel (one process rebuilds) unless the counters are of another epoch already, or holds
-- of an older epoch remain (their orders are still landing, uncounted by these counters).
local meta = redis.call('HMGET', meta_key, 'state', 'epoch')
if meta[1] ~= 'ready' or meta[2] ~= ARGV[1] then return 0 end
for _, order in ipairs(redis.call('ZRANGE', holds_key, 0, -1)) do
  if redis.call('HGET', base .. 'h:' .. order, 'epoch') ~= ARGV[1] then return 0 end
end
for _, id in ipairs(redis.call('ZRANGE', base .. 'uholds', 0, -1)) do
  if redis.call('HGET', base .. 'u:' .. id, 'epoch') ~= ARGV[1] then return 0 end
end
return redis.call('DEL', meta_key)
