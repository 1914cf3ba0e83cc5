-- ARGV: epoch, after (the watermark the batch follows), to, then changes:
--   'S', variant, delta, hold or ''              supply (an adjustment's hold released)
--   'P', order, buyer, n, n * (variant, product, qty)   placed
--   'C', order                                   closed without an order
--   'G', buyer, n, n * (variant, product, qty)   given back
local meta = redis.call('HMGET', meta_key, 'state', 'epoch', 'watermark')
if meta[1] ~= 'ready' or meta[2] ~= ARGV[1] or meta[3] ~= ARGV[2] then return 'stale' end
local epoch = ARGV[1]
local i = 4
local function units(buyer, n, sign)
  for j = 0, n - 1 do
    local variant, product, qty = ARGV[i + 3 * j], ARGV[i + 3 * j + 1], tonumber(ARGV[i + 3 * j + 2])
    redis.call('HINCRBY', avail_key, variant, -sign * qty)
    redis.call('HINCRBY', bought_key, product .. ':' .. buyer, sign * qty)
  end
  i = i + 3 * n
end
while i <= #ARGV do
  local kind = ARGV[i]
  if kind == 'S' then
    if ARGV[i + 3] ~= '' then release_units(ARGV[i + 3], epoch) end
    redis.call('HINCRBY', avail_key, ARGV[i + 1], ARGV[i + 2])
    i = i + 4
  elseif kind == 'P' then
    -- Its hold (whatever it holds, of whichever epoch) gives back what it counted, and the
    -- order takes what it sold: a hold of other lines (a retry with another body after a
    -- flush) leaves no counter wrong.
    local order, buyer, n = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    release(order, epoch)
    i = i + 4
    units(buyer, n, 1)
  elseif kind == 'C' then
    release(ARGV[i + 1], epoch)
    i = i + 2
  elseif kind == 'G' then
    local buyer, n = ARGV[i + 1], tonumber(ARGV[i + 2])
    i = i + 3
    units(buyer, n, -1)
  else
    return redis.error_reply('unknown counter change ' .. tostring(kind))
  end
end
redis.call('HSET', meta_key, 'watermark', ARGV[3])
return 'done'
