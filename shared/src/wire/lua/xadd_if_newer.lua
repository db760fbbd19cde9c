-- Appends an event (or a node message) under the id '<seq>-0' only if the stream's last id is
-- lower: an entry already published, by this writer or the one before, is not published twice.
-- KEYS[1]: the stream; KEYS[2] (optional): the nodes' feed, notified of a node channel's entry.
-- ARGV[1]: seq; ARGV[2]: the stream's cap; ARGV[3]: type; ARGV[4]: envelope; with KEYS[2],
-- ARGV[5]: the node id and ARGV[6]: the feed's cap.
-- Answers 1 (appended) or 0 (already there).
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local seq = tonumber(string.match(last[1][1], '^(%d+)'))
  if seq >= tonumber(ARGV[1]) then return 0 end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[1] .. '-0', 'type', ARGV[3], 'envelope', ARGV[4])
if KEYS[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'n', ARGV[5], 'i', ARGV[1] .. '-0')
end
return 1
