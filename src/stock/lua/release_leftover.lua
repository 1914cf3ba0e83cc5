-- ARGV: order, the position of its OrderPlaced. Released only once the projector has passed
-- that position (until then it will count the hold itself).
local meta = redis.call('HMGET', meta_key, 'state', 'epoch', 'watermark')
if meta[1] ~= 'ready' or tonumber(meta[3]) < tonumber(ARGV[2]) then return 0 end
release(ARGV[1], meta[2])
return 1
