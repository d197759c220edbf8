-- Decide every token bucket of one event at once; take from all or from none.
--
-- The arithmetic is limitry_local/buckets.py's take() line for line (same
-- operations in the same order, so IEEE doubles give the same answers as the
-- in-memory store). Keep the two in step: tests/test_redis_buckets.py checks
-- them against each other.
--
-- KEYS[i]   one bucket: a hash {t = tokens, u = updated, f = the whole second it is
--           full again, w = id of the take that wrote it, o = what adjusts that
--           clamped at 0 charged beyond the tokens (bucket_give_back.lua pays it),
--           r = the tokens adjusts and give-backs have added since the key was
--           made, b = the write id that made it, k = on a bucket shared by two
--           capacities, the capacity of the write that set b}
-- ARGV[1]   "take", "peek" (decides and writes nothing) or "adjust" (charges each cost
--           whatever it leaves, never below 0, or gives a negative cost back, never
--           above capacity: a reservation settling; answers nothing)
-- ARGV[2]   now in unix seconds, or "" to use this server's TIME
-- ARGV[3]   the caller's reading of the same clock ("" for now): Retry-After counts
--           from it, so after the caller's clock stepped back waiting it out suffices
-- ARGV[4]   extra milliseconds a key outlives the instant it is full again
-- ARGV[5]   write id, so a give-back can tell whether anyone wrote after this take
-- ARGV[6 + 4(i-1) ..]  capacity, window seconds, cost of bucket i, and the largest
--           capacity any event may meet on it (0: its own; buckets.py's BucketAsk):
--           its f and expiry are when it is full at that one
--
-- Returns {allowed, remaining, reset, current_remaining, current_reset,
-- retry_after} per bucket, flattened; after a take that took, then per bucket
-- the tokens and updated it wrote, the t, u, f it replaced ("" when none), and
-- the bucket's r and b, which bucket_give_back.lua needs.

local EPSILON = 1e-9

local now
if ARGV[2] == "" then
  -- Server time, so hosts whose clocks disagree still share one timeline.
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call("TIME")
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
else
  now = tonumber(ARGV[2])
end
local since = now
if ARGV[3] ~= "" then since = math.min(tonumber(ARGV[3]), now) end
local writing = ARGV[1] == "take"
local adjusting = ARGV[1] == "adjust"
local margin = tonumber(ARGV[4])

local function whole(tokens)
  return math.floor(tokens + EPSILON)
end

-- %.17g: redis.call would format a number with %.14g and lose bits.
local function exact(x)
  return string.format("%.17g", x)
end

-- The write id that made the bucket (b), set anew by this write when it is
-- new, and on a bucket shared by two capacities (an override outside per) when
-- this write's capacity is another than k: that write's own cap cut a strict
-- order without a pending take as it cut this one, so the room that take's
-- give-back reckons at its capacity is gone.
local function made_by(key, stored, shared, capacity)
  if stored[1] and not (shared and tonumber(stored[7]) ~= capacity) then
    return stored[6] or ""
  end
  redis.call("HSET", key, "b", ARGV[5])
  if shared then redis.call("HSET", key, "k", capacity) end
  return ARGV[5]
end

local answers = {}
local writes = {}
local allowed = true
for i, key in ipairs(KEYS) do
  local base = 6 + 4 * (i - 1)
  local capacity = tonumber(ARGV[base])
  local window = tonumber(ARGV[base + 1])
  local cost = tonumber(ARGV[base + 2])
  local keep = math.max(capacity, tonumber(ARGV[base + 3]))
  local stored = redis.call("HMGET", key, "t", "u", "f", "o", "r", "b", "k")
  local shared = tonumber(ARGV[base + 3]) > 0
  -- A bucket past the second it was full again reads as missing, which is full.
  local known = stored[1] and tonumber(stored[3]) > now
  local tokens, updated
  if not known then
    tokens, updated = capacity, now
  elseif now <= tonumber(stored[2]) then
    -- Time stands still for this bucket until now passes the last write: a
    -- lagging clock cannot mint tokens.  Clamped to this event's capacity: one
    -- bucket may meet two (an override outside per), as buckets.py's _decide.
    tokens, updated = math.min(capacity, tonumber(stored[1])), tonumber(stored[2])
  else
    local t = tonumber(stored[1])
    local u = tonumber(stored[2])
    tokens = math.min(capacity, t + (now - u) * capacity / window)
    updated = now
  end
  local rate = capacity / window
  if adjusting then
    -- What earlier overruns lost at 0 (field o, below).  A refund (a reservation
    -- released or settled under its estimate) pays it before adding tokens
    -- back: a strict order without that hold had them there for the overrun.
    local owed = 0
    if tokens < capacity then owed = tonumber(stored[4]) or 0 end
    local paid = 0
    if cost < 0 then paid = math.min(-cost, owed) end
    local after = math.min(capacity, math.max(0, tokens - cost - paid))
    local kept = math.ceil(updated + (keep - after) / (keep / window))
    redis.call("HSET", key, "t", exact(after), "u", exact(updated), "f", exact(kept),
               "w", ARGV[5])
    made_by(key, stored, shared, capacity)
    -- Tokens that come back (a refund) leave less room below the capacity for
    -- a take pending since: its give-back subtracts what r grew meanwhile.
    if after > tokens then
      redis.call("HSET", key, "r", exact((tonumber(stored[5]) or 0) + after - tokens))
    end
    -- The overrun: a charge beyond the tokens is lost at 0.  A take still
    -- pending from before would have left those tokens for it in a strict
    -- order without that take, so its give-back must not add them back: the
    -- bucket keeps the overrun as a debt that give-backs pay first.  A bucket
    -- found or left full owes nothing (a strict order is full there too).
    local debt = 0
    if after < capacity then debt = owed - paid end
    if cost > tokens then debt = debt + (cost - tokens) end
    if debt > 0 then
      redis.call("HSET", key, "o", exact(debt))
    elseif stored[4] then
      redis.call("HDEL", key, "o")
    end
    redis.call("PEXPIRE", key, math.max(1, math.ceil((kept - now) * 1000) + margin))
  else
    local current_reset = math.ceil(updated + (capacity - tokens) / (capacity / window))
    local current_remaining = whole(tokens)
    if cost <= tokens + EPSILON then
      local after = math.max(0, tokens - cost)
      local reset = math.ceil(updated + (capacity - after) / rate)
      answers[#answers + 1] = {1, whole(after), reset, current_remaining, current_reset, 0}
      local kept = reset
      if keep > capacity then kept = math.ceil(updated + (keep - after) / (keep / window)) end
      writes[i] = {after, updated, kept, stored, tokens >= capacity, shared, capacity}
    else
      allowed = false
      -- A cost above capacity never fits; its retry is the time to a full bucket.
      local missing = math.min(cost, capacity) - tokens
      local retry = math.max(1, math.ceil(updated + missing / rate - since - EPSILON))
      -- From a stepped-back clock the rounding of two instants near 1.8e9 can
      -- leave the bucket a hair short at since + retry (buckets.py's _decide).
      -- At updated itself (a deficit below the instants' precision) nothing refills.
      local later = since + retry
      local held = tokens
      if later > updated then
        held = math.min(capacity, tokens + (later - updated) * capacity / window)
      end
      if math.min(cost, capacity) > held + EPSILON then retry = retry + 1 end
      -- After the event: drained to 0, what charging a soft limit leaves.
      local drained = math.ceil(updated + capacity / rate)
      answers[#answers + 1] = {0, 0, drained, current_remaining, current_reset, retry}
    end
  end
end

local flat = {}
for _, answer in ipairs(answers) do
  for _, value in ipairs(answer) do
    flat[#flat + 1] = value
  end
end

if writing and allowed then
  for i, key in ipairs(KEYS) do
    local after, updated, reset, stored, full, shared, capacity = unpack(writes[i])
    redis.call("HSET", key, "t", exact(after), "u", exact(updated), "f", exact(reset),
               "w", ARGV[5])
    -- Found full: a strict order is full here too, and owes nothing.
    if full and stored[4] then redis.call("HDEL", key, "o") end
    -- A new key (or a new capacity): b tells a give-back so.
    local born = made_by(key, stored, shared, capacity)
    -- Idle keys go once they are full again: a missing key reads as full.
    redis.call("PEXPIRE", key, math.max(1, math.ceil((reset - now) * 1000) + margin))
    -- What a give-back needs: this write, and the state it replaced.
    flat[#flat + 1] = exact(after)
    flat[#flat + 1] = exact(updated)
    flat[#flat + 1] = stored[1] or ""
    flat[#flat + 1] = stored[2] or ""
    flat[#flat + 1] = stored[3] or ""
    flat[#flat + 1] = stored[5] or "0"
    flat[#flat + 1] = born
  end
end
return flat
