-- This process's live requests renew their leases. ARGV: prefix, (unused), lease end (ms),
-- then (profile, user, ticket) triples.
local until_ = tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  local p, uid, ticket = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local b = P .. 'p:' .. p .. ':'
  redis.call('ZADD', b .. 'in', 'XX', until_, ticket)
  redis.call('ZADD', b .. 'wait', 'XX', until_, ticket)
  redis.call('ZADD', P .. 'u:' .. uid .. ':in', 'XX', until_, ticket)
end
return 1
