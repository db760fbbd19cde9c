-- Drops a node from the index of live nodes, unless a heartbeat renewed it meanwhile.
-- KEYS[1]: the index; ARGV[1]: node id; ARGV[2]: now in ms since the epoch.
-- Answers 1 (dropped) or 0 (renewed, or not there).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
