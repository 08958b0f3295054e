-- A request asks for a turn. ARGV: prefix, profile, user, ticket, now (ms), lease (ms),
-- slots, cap (slots one user may hold), queue length, the user's share of the queue,
-- requests per minute (-1: none), requests in flight (-1: none), tokens per day (-1: none),
-- today's tokens key.
-- Returns {"admitted"}, {"queued", waiting}, {"refused", reason, retry after (ms), used} or
-- {"count"} (today's tokens are not counted in Redis: rebuild the count, then ask again).
local uid, ticket = ARGV[3], ARGV[4]
local now, lease = tonumber(ARGV[5]), tonumber(ARGV[6])
local slots, cap = tonumber(ARGV[7]), tonumber(ARGV[8])
local queue_length, share = tonumber(ARGV[9]), tonumber(ARGV[10])
local rpm, concurrent = tonumber(ARGV[11]), tonumber(ARGV[12])
local tokens_limit, tokens_key = tonumber(ARGV[13]), ARGV[14]
local until_ = now + lease

if tokens_limit >= 0 then
  local used = redis.call('HGET', tokens_key, 'n')
  if not used then return {'count'} end
  if tonumber(used) >= tokens_limit then return {'refused', 'tokens_per_day', 0, tonumber(used)} end
end

redis.call('HSET', CONF, 'slots', slots, 'cap', cap)
tidy(now)
promote(until_)

local minute = P .. 'u:' .. uid .. ':rpm'
redis.call('ZREMRANGEBYSCORE', minute, '-inf', now - 60000)
if rpm >= 0 and redis.call('ZCARD', minute) >= rpm then
  local oldest = redis.call('ZRANGE', minute, 0, 0, 'WITHSCORES')
  local retry = 60000
  if oldest[2] then retry = tonumber(oldest[2]) + 60000 - now end
  return {'refused', 'requests_per_minute', retry}
end
local mine = user_in(uid)
redis.call('ZREMRANGEBYSCORE', mine, '-inf', now)
if concurrent >= 0 and redis.call('ZCARD', mine) >= concurrent then
  return {'refused', 'concurrent_requests', 1000}
end

local waiting = redis.call('ZCARD', WAIT)
local held = tonumber(redis.call('HGET', HELD, uid) or '0')
local result
if waiting == 0 and redis.call('ZCARD', IN) < slots and held < cap then
  redis.call('ZADD', IN, until_, ticket)
  redis.call('HINCRBY', HELD, uid, 1)
  redis.call('HSET', OWNER, ticket, uid)
  log('admit', ticket, uid)
  result = {'admitted'}
else
  if waiting >= queue_length then return {'refused', 'queue_full', 5000} end
  local queue = queue_of(uid)
  local own = redis.call('LLEN', queue)
  if own >= share then return {'refused', 'queue_share', 5000} end
  redis.call('RPUSH', queue, ticket)
  keep(queue)
  if own == 0 then redis.call('RPUSH', RR, uid) end
  redis.call('ZADD', WAIT, until_, ticket)
  redis.call('HSET', OWNER, ticket, uid)
  log('queue', ticket, uid)
  promote(until_)
  if redis.call('ZSCORE', IN, ticket) then
    redis.call('DEL', P .. 't:' .. ticket)
    result = {'admitted'}
  else
    result = {'queued', redis.call('ZCARD', WAIT)}
  end
end
redis.call('ZADD', minute, now, ticket)
keep(minute, 120)
redis.call('ZADD', mine, until_, ticket)
keep(mine)
for _, key in ipairs({IN, WAIT, OWNER, HELD, RR, CONF, LOG}) do keep(key) end
return result
