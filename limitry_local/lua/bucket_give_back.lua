-- Give back what one take (bucket_take.lua) took, after its event was denied by
-- a quota or failed to record.
--
-- KEYS[i]   the buckets that take wrote
-- ARGV[1]   that take's write id
-- ARGV[2 + 11(i-1) ..]  per bucket: capacity, window seconds, cost, the largest
--           capacity it may meet (0: its own), the tokens and updated the take
--           wrote, the t, u, f it replaced ("" when none), and the bucket's r and
--           b as the take found them
--
-- If nothing wrote the bucket since, the replaced state comes back exactly (a
-- bucket that was missing is deleted): as if the event had never been asked.
-- If another client wrote in between, at most the cost comes back, and no more
-- than a strict order without this event would hold: while the cost was
-- missing the bucket could refill without reaching capacity, so a refill the
-- cap would have cut off is not credited twice.  Other clients may have been
-- denied for lack of these tokens meanwhile, never admitted because of them.
--
-- Nor is what an adjust (bucket_take.lua) lost by clamping at 0: it charged x
-- when the bucket held less, and a strict order without this take would have
-- had this cost there to charge, so it holds up to the overrun less than the
-- cost back.  The bucket keeps those overruns as a debt (field o) and a
-- give-back pays it before adding anything: several takes pending across one
-- clamp share it, and together give back exactly what a strict order without
-- them holds.  A take made after the clamp pays it too, while any is left:
-- that gives back too little (a denial later), never too much.  The debt
-- goes when the bucket is found or left full, or its key expires.
--
-- Nor what came back meanwhile (a reservation's refund, another take's
-- give-back): it took up room below the capacity that a strict order without
-- this take had already filled, so the room left is less by what the bucket's
-- r (all tokens added back since the key was made) grew since the take.
-- A bucket that expired meanwhile reads as full already and is left alone; one
-- whose key was made again since (b differs) was full in between, as a strict
-- order without this take was too: nothing comes back.

local function exact(x)
  return string.format("%.17g", x)
end

for i, key in ipairs(KEYS) do
  local base = 2 + 11 * (i - 1)
  local stored = redis.call("HMGET", key, "t", "u", "w", "o", "r", "b")
  local raised = (tonumber(stored[5]) or 0) - tonumber(ARGV[base + 9])
  if stored[1] and stored[3] == ARGV[1] then
    if ARGV[base + 6] == "" then
      redis.call("DEL", key)
    else
      redis.call("HSET", key, "t", ARGV[base + 6], "u", ARGV[base + 7], "f", ARGV[base + 8])
      -- Spent: a second give-back of the same take must not restore again.
      redis.call("HDEL", key, "w")
    end
  elseif stored[1] and (stored[6] or "") == ARGV[base + 10] and raised >= 0 then
    local capacity = tonumber(ARGV[base])
    local window = tonumber(ARGV[base + 1])
    local cost = tonumber(ARGV[base + 2])
    local keep = math.max(capacity, tonumber(ARGV[base + 3]))
    local wrote = tonumber(ARGV[base + 4])
    local wrote_at = tonumber(ARGV[base + 5])
    local tokens = tonumber(stored[1])
    local updated = tonumber(stored[2])
    -- Without this event the bucket would have held `cost` more, up to the
    -- cap: refill since the take beyond (capacity - cost - wrote) may have been
    -- cut off there.
    local credited = math.max(0, updated - wrote_at) * capacity / window
    -- Less what came back since (a refund, another give-back): it filled room
    -- a strict order without this event had filled already.
    local owed = math.max(0, math.min(cost, capacity - wrote - credited - raised))
    -- Then the debt: this take's share of what clamps at 0 lost since.  Paid
    -- after the cap's cut, not before: when the refill was cut at the cap
    -- before the clamp, a strict order held less by both (min(c, room) - o).
    -- When the clamp came first this gives back less than it could: never more.
    -- And only out of what it would give back: a take with nothing to give
    -- that paid it left the next to give its whole cost back.
    local debt = tonumber(stored[4]) or 0
    local paid = math.min(owed, debt)
    if paid > 0 then
      if debt - paid > 0 then
        redis.call("HSET", key, "o", exact(debt - paid))
      else
        redis.call("HDEL", key, "o")
      end
    end
    local back = owed - paid
    -- Never below what it holds: a bucket shared by two capacities (an override
    -- outside per) may hold more than this event's, left by a larger one's.
    if back > 0 and tokens < capacity then
      local before = tokens
      tokens = math.min(capacity, tokens + back)
      local added = tokens - before
      local full = math.ceil(updated + (keep - tokens) / (keep / window))
      redis.call("HSET", key, "t", exact(tokens), "f", exact(full),
                 "r", exact((tonumber(stored[5]) or 0) + added))
    end
    -- The take that wrote last no longer wrote what the bucket holds: its own
    -- give-back must add back too, not restore a state without this one.
    redis.call("HDEL", key, "w")
  end
end
return {}
