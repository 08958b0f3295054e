-- Shared by every script of servers/sharing/admission.py (prepended to each).
-- ARGV[1] is the key prefix, ARGV[2] the profile's id. Keys (P = prefix, p = profile id):
--   P p:<p>:in      ZSET admitted ticket -> lease end (ms)   P p:<p>:wait  ZSET waiting ticket -> lease end
--   P p:<p>:owner   HASH ticket -> user id                    P p:<p>:held  HASH user id -> admitted count
--   P p:<p>:q:<u>   LIST the user's waiting tickets, oldest first
--   P p:<p>:rr      LIST users with waiting tickets, in round-robin order
--   P p:<p>:conf    HASH slots, cap (the profile's, written by each acquire)
--   P p:<p>:log     LIST "admit|queue <ticket> <user>", newest first, capped
--   P t:<ticket>    LIST a "go" pushed when a waiting ticket is admitted
--   P u:<u>:in      ZSET the user's tickets (admitted or waiting) -> lease end
--   P u:<u>:rpm     ZSET the user's requests of the last minute -> time (ms)
--   P u:<u>:tok:<day>  HASH n (tokens counted today), upto (the last usage record the n was rebuilt from)
local P = ARGV[1]
local pid = ARGV[2]
local base = P .. 'p:' .. pid .. ':'
local IN, WAIT, OWNER, HELD = base .. 'in', base .. 'wait', base .. 'owner', base .. 'held'
local RR, CONF, LOG = base .. 'rr', base .. 'conf', base .. 'log'
local LOG_LENGTH = 500
local KEEP = 86400 -- seconds a profile's keys outlive their last use

local function queue_of(uid) return base .. 'q:' .. uid end
local function user_in(uid) return P .. 'u:' .. uid .. ':in' end

local function log(what, ticket, uid)
  redis.call('LPUSH', LOG, what .. ' ' .. ticket .. ' ' .. uid)
  redis.call('LTRIM', LOG, 0, LOG_LENGTH - 1)
end

-- An admitted ticket gives its slot back; true if it was admitted.
local function free(ticket)
  if redis.call('ZREM', IN, ticket) == 0 then return false end
  local uid = redis.call('HGET', OWNER, ticket)
  redis.call('HDEL', OWNER, ticket)
  if uid then
    if redis.call('HINCRBY', HELD, uid, -1) <= 0 then redis.call('HDEL', HELD, uid) end
    redis.call('ZREM', user_in(uid), ticket)
  end
  return true
end

-- A waiting ticket leaves the queue; true if it was waiting.
local function leave(ticket)
  if redis.call('ZREM', WAIT, ticket) == 0 then return false end
  local uid = redis.call('HGET', OWNER, ticket)
  redis.call('HDEL', OWNER, ticket)
  if uid then
    local queue = queue_of(uid)
    redis.call('LREM', queue, 0, ticket)
    if redis.call('LLEN', queue) == 0 then redis.call('LREM', RR, 0, uid) end
    redis.call('ZREM', user_in(uid), ticket)
  end
  return true
end

-- Tickets whose lease ran out (their process died without a word) are dropped.
local function tidy(now)
  for _, ticket in ipairs(redis.call('ZRANGEBYSCORE', IN, '-inf', now)) do free(ticket) end
  for _, ticket in ipairs(redis.call('ZRANGEBYSCORE', WAIT, '-inf', now)) do leave(ticket) end
end

-- Admit waiting tickets while a slot is free, one per user in turn (round robin), skipping a
-- user who already holds `cap` slots. Each admitted ticket gets its "go".
local function promote(lease_until)
  local slots = tonumber(redis.call('HGET', CONF, 'slots') or '0')
  local cap = tonumber(redis.call('HGET', CONF, 'cap') or '0')
  local skipped = 0
  while redis.call('ZCARD', IN) < slots do
    local users = redis.call('LLEN', RR)
    if users == 0 or skipped >= users then break end
    local uid = redis.call('LPOP', RR)
    local queue = queue_of(uid)
    if tonumber(redis.call('HGET', HELD, uid) or '0') >= cap then
      redis.call('RPUSH', RR, uid)
      skipped = skipped + 1
    else
      local ticket = redis.call('LPOP', queue)
      if ticket then
        redis.call('ZREM', WAIT, ticket)
        redis.call('ZADD', IN, lease_until, ticket)
        redis.call('HINCRBY', HELD, uid, 1)
        redis.call('RPUSH', P .. 't:' .. ticket, '1')
        redis.call('EXPIRE', P .. 't:' .. ticket, 600)
        log('admit', ticket, uid)
        skipped = 0
      end
      if redis.call('LLEN', queue) > 0 then redis.call('RPUSH', RR, uid) end
    end
  end
end

local function keep(key, seconds)
  redis.call('EXPIRE', key, seconds or KEEP)
end
