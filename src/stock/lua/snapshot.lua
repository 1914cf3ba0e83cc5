-- No ARGV. {1, watermark, avail (flat), held (flat)} of the current epoch in one step, or
-- {0, 0, {}, {}} while there are no counters. Walks every hold: for the audit, not for the
-- hot path.
local meta = redis.call('HMGET', meta_key, 'state', 'epoch', 'watermark')
if meta[1] ~= 'ready' then return {0, 0, {}, {}} end
local epoch = meta[2]
local held = {}
for _, order in ipairs(redis.call('ZRANGE', holds_key, 0, -1)) do
  local hold = redis.call('HMGET', base .. 'h:' .. order, 'epoch', 'lines')
  if hold[1] == epoch then
    for variant, _, qty in string.gmatch(hold[2], '([^:;]+):([^:;]+):([^:;]+)') do
      held[variant] = (held[variant] or 0) + tonumber(qty)
    end
  end
end
for _, id in ipairs(redis.call('ZRANGE', base .. 'uholds', 0, -1)) do
  local hold = redis.call('HMGET', base .. 'u:' .. id, 'epoch', 'variant', 'units')
  if hold[1] == epoch then
    held[hold[2]] = (held[hold[2]] or 0) + tonumber(hold[3])
  end
end
local flat = {}
for variant, units in pairs(held) do
  flat[#flat + 1] = variant
  flat[#flat + 1] = tostring(units)
end
return {1, tonumber(meta[3]), redis.call('HGETALL', avail_key), flat}
