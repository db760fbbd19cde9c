-- Trims a stream up to the newest entry the writer acknowledged, but never past the oldest
-- entry still pending in the group (one another consumer holds: a writer that lost its lease,
-- frozen on its read, whose entries the active writer claims once idle), which must stay
-- readable until claimed.
-- KEYS[1]: the stream; ARGV[1]: the group; ARGV[2]: the newest acknowledged id (`ms-seq`).
-- Answers the id trimmed to (`MINID ~`: whole nodes only, so entries may stay behind it).
local function before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, a_seq, b_ms, b_seq = tonumber(a_ms), tonumber(a_seq), tonumber(b_ms), tonumber(b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local to = ARGV[2]
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 and before(pending[2], to) then to = pending[2] end
redis.call('XTRIM', KEYS[1], 'MINID', '~', to)
return to
