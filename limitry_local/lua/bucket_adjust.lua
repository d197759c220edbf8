-- Charge (or, negative, give back) amounts whatever they leave: a reservation
-- settling its estimate against the real cost (buckets.BucketStore.adjust).
--
-- KEYS[i]   one bucket, as bucket_take.lua keeps it
-- ARGV[1]   now in unix seconds, or "" to use this server's TIME
-- ARGV[2]   extra milliseconds a key outlives the instant it is full again
-- ARGV[3]   write id (a pending give-back of an older take must not restore over this)
-- ARGV[4 + 3(i-1) ..]  capacity, window seconds, cost of bucket i
--
-- The bucket is refilled to now as in bucket_take.lua, then holds
-- min(capacity, max(0, tokens - cost)).

local now
if ARGV[1] == "" then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call("TIME")
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local margin = tonumber(ARGV[2])

local function exact(x)
  return string.format("%.17g", x)
end

for i, key in ipairs(KEYS) do
  local base = 4 + 3 * (i - 1)
  local capacity = tonumber(ARGV[base])
  local window = tonumber(ARGV[base + 1])
  local cost = tonumber(ARGV[base + 2])
  local stored = redis.call("HMGET", key, "t", "u", "f")
  local known = stored[1] and tonumber(stored[3]) > now
  local tokens, updated
  if not known then
    tokens, updated = capacity, now
  elseif now <= tonumber(stored[2]) then
    tokens, updated = tonumber(stored[1]), tonumber(stored[2])
  else
    local t = tonumber(stored[1])
    local u = tonumber(stored[2])
    tokens = math.min(capacity, t + (now - u) * capacity / window)
    updated = now
  end
  local after = math.min(capacity, math.max(0, tokens - cost))
  local reset = math.ceil(updated + (capacity - after) / (capacity / window))
  redis.call("HSET", key, "t", exact(after), "u", exact(updated), "f", exact(reset),
             "w", ARGV[3])
  redis.call("PEXPIRE", key, math.max(1, math.ceil((reset - now) * 1000) + margin))
end
return {}
