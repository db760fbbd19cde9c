-- Admission, then the Idempotency-Key, the backlog bound, and a batch of entries with their
-- issuer: all or none (the script runs whole).
-- KEYS[3]: the stream; KEYS[4]: the issuers hash; KEYS[5]: the idempotency key (the stream's
-- key again when there is none).
-- ARGV[3]: type; ARGV[4]: issuer; ARGV[5]: the answer to remember ('' without an idempotency
-- key); ARGV[6]: its TTL in seconds; ARGV[7]: the most entries the stream may hold ('0': no
-- bound; a batch is admitted while it holds fewer, and may take it past by its own size);
-- ARGV[8], ARGV[9], ...: each entry's message id, then its envelope.
-- Answers {'revoked'}, {'limited'}, {'remembered', answer}, {'backlogged'} or {'appended'}.
local refused = refusal()
if refused then return {refused} end
if ARGV[5] ~= '' then
  local previous = redis.call('GET', KEYS[5])
  if previous then return {'remembered', previous} end
end
if ARGV[7] ~= '0' and redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[7]) then return {'backlogged'} end
if ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[6]) end
for i = 8, #ARGV - 1, 2 do
  redis.call('XADD', KEYS[3], '*', 'type', ARGV[3], 'envelope', ARGV[i + 1])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[4])
end
return {'appended'}
