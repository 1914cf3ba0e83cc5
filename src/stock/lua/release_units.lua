-- ARGV: hold id. Its units go back when it is of the current epoch.
release_units(ARGV[1], redis.call('HGET', meta_key, 'epoch'))
return 1
