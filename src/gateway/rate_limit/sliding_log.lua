-- patchbay's shared sliding log: the rules of sliding_log.rs, run atomically inside Redis so that every
-- replica's decision checks and commits all windows of a quota at once.
--
-- KEYS[1]  the credential's log: a sorted set of call ids, each scored with the ms at which that call
--          last could have reached the provider (its deadline while in flight, when it finished after)
-- KEYS[2]  the ms until which the credential is paused after a provider's 429
-- Both keys share the hash tag {patchbay:<fingerprint>}, so they live in one Cluster slot.
--
-- ARGV[1]  check | reserve | settle | pause
-- ARGV[2]  now in ms, or "" for the server's own clock (TIME): one clock for every replica
-- check, reserve: ARGV[3] calls, ARGV[4] hold ms, ARGV[5] reservation id, then (limit, window ms) pairs
--   -> {verdict (1 admitted, 0 refused, -1 exceeds), retry ms, paused ms, then (used, reset ms) per window}
-- settle: ARGV[3] reservation id, ARGV[4] calls reserved, ARGV[5] calls made, ARGV[6] longest window ms
-- pause:  ARGV[3] ms

if redis.replicate_commands then
  redis.replicate_commands() -- Redis < 5: replicate the writes, not the script that read TIME
end

local log, pause_key, op = KEYS[1], KEYS[2], ARGV[1]
local now = tonumber(ARGV[2])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The key lives as long as its newest stamp stays in the longest window.
local function keep(longest)
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if newest[2] then
    redis.call('PEXPIRE', log, math.max(tonumber(newest[2]) + longest - now, 1))
  end
end

if op == 'pause' then
  local ms = tonumber(ARGV[3])
  local current = tonumber(redis.call('GET', pause_key) or '0')
  if now + ms > current then
    redis.call('SET', pause_key, now + ms, 'PX', ms)
  end
  return {now + ms}
end

if op == 'settle' then
  local id, reserved, made = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  for i = 1, reserved do
    if i <= made then
      redis.call('ZADD', log, 'XX', now, id .. ':' .. i)
    else
      redis.call('ZREM', log, id .. ':' .. i)
    end
  end
  keep(tonumber(ARGV[6]))
  return {made}
end

local calls, hold, id = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local paused = math.max(tonumber(redis.call('GET', pause_key) or '0') - now, 0)
local verdict, retry = 1, paused
if paused > 0 then verdict = 0 end
local reply, longest = {}, 0
for i = 6, #ARGV, 2 do
  local limit, span = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  longest = math.max(longest, span)
  -- A call stamped s is in the window while s > now - span.
  local floor = '(' .. (now - span)
  local used = redis.call('ZCOUNT', log, floor, '+inf')
  local reset = 0
  if used > 0 then
    local oldest = redis.call('ZRANGEBYSCORE', log, floor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    reset = tonumber(oldest[2]) + span - now
  end
  if calls > limit then
    verdict = -1
  elseif used + calls > limit then
    -- The calls fit once the (used + calls - limit) oldest calls in the window have left it.
    local leaving = redis.call('ZRANGEBYSCORE', log, floor, '+inf', 'WITHSCORES', 'LIMIT', used + calls - limit - 1, 1)
    retry = math.max(retry, tonumber(leaving[2]) + span - now)
    if verdict == 1 then verdict = 0 end
  end
  if paused > 0 then
    used, reset = math.max(used, limit), math.max(reset, paused)
  end
  reply[#reply + 1] = used
  reply[#reply + 1] = reset
end

if op == 'reserve' and verdict == 1 and calls > 0 and longest > 0 then
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - longest)
  for i = 1, calls do
    redis.call('ZADD', log, now + hold, id .. ':' .. i)
  end
  keep(longest)
  for i = 1, #reply, 2 do
    if reply[i] == 0 then
      reply[i + 1] = tonumber(ARGV[6 + i]) -- as the caller sees it, its own calls are made now
    end
    reply[i] = reply[i] + calls
  end
end

if verdict ~= 0 then retry = 0 end
return {verdict, retry, paused, unpack(reply)}
