-- ARGV: order, buyer, fingerprint, record ttl (s), n lines, n * (variant, product, qty),
--       m products, m * (product, opens ms or '', ends ms or '', limit or '', units asked),
--       from cart ('' or the service's now in ms), cart ttl (ms)
-- From the cart, each line's quantity is the buyer's cart's (the lines' own are ignored),
-- and the units asked per product are summed here; once held, the lines leave the cart.
local order, buyer, fingerprint, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local record_key = base .. 'i:' .. order
local record = redis.call('HMGET', record_key, 'fp', 'step', 'answer')
if record[1] then
  if record[1] ~= fingerprint then return {'key_reused'} end
  if record[2] == 'done' then return {'finished', record[3]} end
  local hold_key = base .. 'h:' .. order
  if redis.call('EXISTS', hold_key) == 0 then return {'check_log'} end
  if record[2] == 'retry' then
    -- The hold is fresh again: the sweeps measure its age from this retry.
    redis.call('HSET', record_key, 'step', 'held')
    redis.call('HSET', hold_key, 'at', now)
    redis.call('ZADD', holds_key, now, order)
    local held = redis.call('HMGET', hold_key, 'epoch', 'lines')
    return {'resumed', tostring(now), held[1], held[2]}
  end
  return {'in_flight'}
end
local meta = redis.call('HMGET', meta_key, 'state', 'epoch')
if meta[1] ~= 'ready' then return {'rebuilding'} end
local i = 6
local lines = {}
for _ = 1, tonumber(ARGV[5]) do
  lines[#lines + 1] = {ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])}
  i = i + 3
end
local m = tonumber(ARGV[i])
local cart_now, cart_ttl = ARGV[i + 1 + m * 5], ARGV[i + 2 + m * 5]
if cart_now and cart_now ~= '' then
  local cart_key = base .. 'cart:' .. buyer
  local at = redis.call('HGET', cart_key, 'at')
  local expired = (not at) or tonumber(at) + tonumber(cart_ttl) <= tonumber(cart_now)
  for _, line in ipairs(lines) do
    local entry = (not expired) and redis.call('HGET', cart_key, 'v:' .. line[1])
    local product, qty = nil, nil
    if entry then product, qty = string.match(entry, '^([^:]+):([^:]+):') end
    if not qty or product ~= line[2] then return {'not_in_cart', line[1]} end
    line[3] = tonumber(qty)
  end
end
local asked_of = {}
for _, line in ipairs(lines) do
  asked_of[line[2]] = (asked_of[line[2]] or 0) + line[3]
end
local buys = {}
i = i + 1
for _ = 1, m do
  local product, opens, ends, limit = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local asked = asked_of[product] or 0
  i = i + 5
  if (opens ~= '' and now < tonumber(opens)) or (ends ~= '' and now >= tonumber(ends)) then
    return {'not_on_sale', product}
  end
  if limit ~= '' then
    local bought = tonumber(redis.call('HGET', bought_key, product .. ':' .. buyer) or '0')
    if bought + asked > tonumber(limit) then
      return {'limit', product, limit, tostring(bought)}
    end
  end
  buys[#buys + 1] = {product, asked}
end
local short = {'sold_out'}
for _, line in ipairs(lines) do
  local left = tonumber(redis.call('HGET', avail_key, line[1]) or '0')
  if left < line[3] then
    short[#short + 1] = line[1]
    short[#short + 1] = tostring(left)
  end
end
if #short > 1 then return short end
local encoded = {}
for _, line in ipairs(lines) do
  redis.call('HINCRBY', avail_key, line[1], -line[3])
  encoded[#encoded + 1] = line[1] .. ':' .. line[2] .. ':' .. line[3]
end
for _, buy in ipairs(buys) do
  redis.call('HINCRBY', bought_key, buy[1] .. ':' .. buyer, buy[2])
end
if cart_now and cart_now ~= '' then
  -- The cart's lines are the order's now: a second order of the same lines finds none.
  local cart_key = base .. 'cart:' .. buyer
  for _, line in ipairs(lines) do
    redis.call('HDEL', cart_key, 'v:' .. line[1])
  end
  local left = 0
  for _, f in ipairs(redis.call('HKEYS', cart_key)) do
    if string.sub(f, 1, 2) == 'v:' then left = left + 1 end
  end
  if left == 0 then redis.call('DEL', cart_key) else redis.call('HSET', cart_key, 'at', cart_now) end
end
local held = table.concat(encoded, ';')
redis.call('HSET', base .. 'h:' .. order, 'epoch', meta[2], 'at', now, 'buyer', buyer,
  'lines', held)
redis.call('ZADD', holds_key, now, order)
redis.call('HSET', record_key, 'fp', fingerprint, 'step', 'held')
redis.call('EXPIRE', record_key, ttl)
return {'held', tostring(now), meta[2], held}
