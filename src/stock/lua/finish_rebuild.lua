-- ARGV: epoch, watermark. The counters were written to next:{epoch}:avail and
-- next:{epoch}:bought; they replace the old ones at once, and orders may go on.
local epoch = ARGV[1]
if redis.call('HGET', meta_key, 'epoch') ~= epoch or redis.call('GET', lease_key) ~= epoch then
  return 0
end
local next_avail, next_bought = base .. 'next:' .. epoch .. ':avail', base .. 'next:' .. epoch .. ':bought'
if redis.call('EXISTS', next_avail) == 1 then
  redis.call('RENAME', next_avail, avail_key)
else
  redis.call('DEL', avail_key)
end
if redis.call('EXISTS', next_bought) == 1 then
  redis.call('RENAME', next_bought, bought_key)
else
  redis.call('DEL', bought_key)
end
redis.call('HSET', meta_key, 'state', 'ready', 'epoch', epoch, 'watermark', ARGV[2])
redis.call('DEL', lease_key)
return 1
