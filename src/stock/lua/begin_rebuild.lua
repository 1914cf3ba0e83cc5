-- ARGV: the new epoch, the lease (ms). Nothing when another rebuild holds the lease.
if not redis.call('SET', lease_key, ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('HSET', meta_key, 'state', 'rebuilding', 'epoch', ARGV[1])
redis.call('HDEL', meta_key, 'watermark')
return 1
