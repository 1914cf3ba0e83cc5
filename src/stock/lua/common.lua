-- Shared by the scripts below (prepended to each). KEYS[1] is the store's base, for example
-- "openrun:{stock}:"; every key starts with it, so all share one Redis Cluster slot.
local base = KEYS[1]
local avail_key, bought_key, holds_key = base .. 'avail', base .. 'bought', base .. 'holds'
local meta_key, lease_key = base .. 'meta', base .. 'lease'

-- Forgets a hold; its units go back only when it is of the current epoch (an older epoch's
-- hold was never counted by the counters that are there now).
local function release(order, epoch)
  local hold_key = base .. 'h:' .. order
  local hold = redis.call('HMGET', hold_key, 'epoch', 'buyer', 'lines')
  if not hold[1] then return end
  redis.call('DEL', hold_key)
  redis.call('ZREM', holds_key, order)
  if hold[1] ~= epoch then return end
  for variant, product, qty in string.gmatch(hold[3], '([^:;]+):([^:;]+):([^:;]+)') do
    redis.call('HINCRBY', avail_key, variant, tonumber(qty))
    redis.call('HINCRBY', bought_key, product .. ':' .. hold[2], -tonumber(qty))
  end
end

-- Forgets a downward adjustment's hold; its units go back only when it is of the current
-- epoch.
local function release_units(id, epoch)
  local hold_key = base .. 'u:' .. id
  local hold = redis.call('HMGET', hold_key, 'epoch', 'variant', 'units')
  if not hold[1] then return end
  redis.call('DEL', hold_key)
  redis.call('ZREM', base .. 'uholds', id)
  if hold[1] == epoch then
    redis.call('HINCRBY', avail_key, hold[2], tonumber(hold[3]))
  end
end
