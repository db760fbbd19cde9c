-- Admission, then a node's live state.
-- KEYS[3]: the node's state hash; KEYS[4]: the index of live nodes; KEYS[5]: the heartbeat feed.
-- ARGV[3]: TTL in ms; ARGV[4]: expiry in ms since the epoch; ARGV[5]: node id; ARGV[6]: the
-- feed's cap; ARGV[7]: n, the count of state fields and values; then the n state fields and
-- values, then the feed entry's fields and values.
-- Answers 'admitted', 'revoked' or 'limited'.
local refused = refusal()
if refused then return refused end
local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[3], unpack(ARGV, 8, 7 + n))
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 8 + n))
return 'admitted'
