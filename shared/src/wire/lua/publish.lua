-- Admission, then the Idempotency-Key, the backlog bound, the entry and its issuer.
-- KEYS[3]: the stream; KEYS[4]: the issuers hash; KEYS[5]: the idempotency key (the stream's
-- key again when there is none).
-- ARGV[3]: type; ARGV[4]: envelope; ARGV[5]: message id; ARGV[6]: issuer; ARGV[7]: the answer
-- to remember ('' without an idempotency key); ARGV[8]: its TTL in seconds; ARGV[9]: the most
-- entries the stream may hold ('0': no bound).
-- Answers {'revoked'}, {'limited'}, {'remembered', answer}, {'backlogged'} or {'appended'}.
local refused = refusal()
if refused then return {refused} end
if ARGV[7] ~= '' then
  local previous = redis.call('GET', KEYS[5])
  if previous then return {'remembered', previous} end
end
if ARGV[9] ~= '0' and redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[9]) then return {'backlogged'} end
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7], 'EX', ARGV[8]) end
redis.call('XADD', KEYS[3], '*', 'type', ARGV[3], 'envelope', ARGV[4])
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
return {'appended'}
