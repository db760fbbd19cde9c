-- Admission alone, for a request that writes nothing to Redis.
-- Answers 'admitted', 'revoked' or 'limited'.
return refusal() or 'admitted'
