-- A request is done (or left the queue). ARGV: prefix, profile, ticket, now (ms), lease (ms),
-- user, tokens, usage record id (0: none), tokens key.
-- Its tokens are added to today's count when the count exists (otherwise the next rebuild
-- reads them from the usage records) and was not rebuilt from this record already.
local ticket, now, lease = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens, record, counted = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
if not free(ticket) then leave(ticket) end
tidy(now)
promote(now + lease)
if tokens > 0 and redis.call('EXISTS', counted) == 1 then
  local upto = tonumber(redis.call('HGET', counted, 'upto') or '0')
  if record == 0 or record > upto then redis.call('HINCRBY', counted, 'n', tokens) end
end
return 1
