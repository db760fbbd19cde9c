-- The admission check every gateway script starts with (concatenated before it).
-- refusal() answers 'revoked', 'limited' or nil.
-- KEYS[1]: the credential's rate window in the cell; KEYS[2]: its revocation marker there.
-- ARGV[1]: the requests allowed per second; ARGV[2]: '1' when a marker can revoke it.
-- The script's own keys and arguments start at 3.
local function refusal()
  if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 'revoked' end
  local count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], 2) end
  if count > tonumber(ARGV[1]) then return 'limited' end
  return nil
end
