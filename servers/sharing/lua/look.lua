-- A waiting request looks at its place. ARGV: prefix, profile, ticket, now (ms), lease (ms).
-- Renews its lease, drops dead tickets and admits whoever may go; returns {"admitted"}, {"queued", waiting}
-- or {"gone"} (its lease ran out: it was dropped).
local ticket, now, lease = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
-- Its own lease first: the process asking is alive.
if redis.call('ZADD', WAIT, 'XX', 'CH', now + lease, ticket) == 1 then
  local uid = redis.call('HGET', OWNER, ticket)
  if uid then redis.call('ZADD', user_in(uid), 'XX', now + lease, ticket) end
end
tidy(now)
promote(now + lease)
if redis.call('ZSCORE', IN, ticket) then return {'admitted'} end
if redis.call('ZSCORE', WAIT, ticket) then return {'queued', redis.call('ZCARD', WAIT)} end
return {'gone'}
