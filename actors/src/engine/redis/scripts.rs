//! The Lua scripts that make each cluster operation one atomic step in Redis.
//!
//! Keys per channel share the hash tag `{<channel>}` so a channel's keys stay on one slot.

/// Publishes one event: next offset, bounded history append, PUBLISH (SPUBLISH on a Redis
/// Cluster, where KEYS and the sharded channel share one hash tag) — atomically.
///
/// KEYS: 1 offset, 2 epoch, 3 history stream, 4 idempotency key (or an unused dummy).
/// ARGV: 1 envelope up to `"offset":`, 2 envelope tail after the epoch (`,"origin":…}`),
///       3 pub/sub channel, 4 history size, 5 time-to-live (ms), 6 "1" when KEYS[4] is used,
///       7 `PUBLISH` or `SPUBLISH`.
/// Returns {offset, epoch}, or {0, epoch} when the idempotency key says it was already published.
///
/// The epoch is regenerated (and offsets restart) whenever the offset key is missing: after
/// history loss (a Redis restart without persistence, eviction, expiry) a client's old position
/// can never be mistaken for a new one.
pub const PUBLISH: &str = r#"
if ARGV[6] == "1" then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then
    return {0, redis.call('GET', KEYS[2]) or ''}
  end
end
local epoch = redis.call('GET', KEYS[2])
if (not epoch) or redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[1], 0)
  redis.call('DEL', KEYS[3])
end
local offset = redis.call('INCR', KEYS[1])
local env = ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[2]
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, offset .. '-0', 'e', env)
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[3], env)
return {offset, epoch}
"#;

/// A channel's position, and the events after a client's position when it asks to recover.
///
/// KEYS: 1 offset, 2 epoch, 3 history stream. ARGV: 1 time-to-live (ms), 2 "since" offset or
/// -1, 3 the client's epoch, 4 max events, 5 "1" to follow a new epoch (optional).
/// Returns {offset, epoch, recovered (0/1), env1, env2, …}. Creates the channel's epoch when it
/// has none, so a subscriber always gets a real position to recover from later.
///
/// A client's position in another epoch recovers nothing (its history is gone). The bridge asks
/// with ARGV 5 = "1": then a position in another epoch (or the empty epoch "") answers with the
/// current epoch from its first offset, because every event of a newer epoch is one the bridge
/// has not relayed yet — a new epoch is replayed, never skipped.
pub const POSITION: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if (not epoch) or redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[1])
  redis.call('SET', KEYS[1], 0, 'PX', ARGV[1])
  redis.call('DEL', KEYS[3])
end
local offset = tonumber(redis.call('GET', KEYS[1]))
local since = tonumber(ARGV[2])
local out = {offset, epoch, 0}
if since < 0 then return out end
if ARGV[3] ~= epoch then
  if ARGV[5] ~= '1' then return out end
  since = 0
end
if since > offset then return out end
if since == offset then out[3] = 1 return out end
local entries = redis.call('XRANGE', KEYS[3], (since + 1) .. '-0', '+', 'COUNT', ARGV[4])
if #entries == 0 then return out end
local first = tonumber(string.match(entries[1][1], '^(%d+)'))
if first ~= since + 1 then return out end
out[3] = 1
for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
return out
"#;

/// Registers a connection in cluster-wide presence.
///
/// KEYS: 1 this node's connections of the tenant (hash conn → "user\trole"), 2 the tenant's
/// user counts (hash user → n), 3 this node's tenants (set), 4 pending offline announcements
/// (sorted set "tenant\tuser" → due ms).
/// ARGV: 1 conn, 2 user, 3 role, 4 tenant, 5 time-to-live (ms).
/// Returns 1 when this is the user's first connection anywhere (announce UserOnline), else 0 —
/// also 0 for a reconnect within the grace period, which cancels the pending UserOffline.
pub const PRESENCE_CONNECT: &str = r#"
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. ARGV[3]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if n == 1 then
  if redis.call('ZREM', KEYS[4], ARGV[4] .. '\t' .. ARGV[2]) == 1 then return 0 end
  return 1
end
return 0
"#;

/// Unregisters a connection. KEYS: 1 connections, 2 user counts, 3 pending offline set.
/// ARGV: 1 conn, 2 user, 3 tenant, 4 due time (ms). When it was the user's last connection
/// anywhere, schedules UserOffline at the due time. Returns 1 then, else 0.
pub const PRESENCE_DISCONNECT: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3] .. '\t' .. ARGV[2])
  return 1
end
return 0
"#;

/// Removes every connection of a node (graceful stop, or a dead node found by a janitor);
/// users whose last connection went with it get a pending UserOffline.
///
/// KEYS: 1 the node's tenants set, 2 pending offline set. ARGV: 1 key prefix, 2 node id,
/// 3 due time (ms). Returns the number of connections removed.
pub const PRESENCE_DROP_NODE: &str = r#"
local removed = 0
local tenants = redis.call('SMEMBERS', KEYS[1])
for _, t in ipairs(tenants) do
  local conns_key = ARGV[1] .. ':presence:' .. t .. ':node:' .. ARGV[2]
  local users_key = ARGV[1] .. ':presence:' .. t .. ':users'
  local conns = redis.call('HGETALL', conns_key)
  for i = 2, #conns, 2 do
    local user = string.match(conns[i], '^([^\t]*)')
    removed = removed + 1
    local n = redis.call('HINCRBY', users_key, user, -1)
    if n <= 0 then
      redis.call('HDEL', users_key, user)
      redis.call('ZADD', KEYS[2], ARGV[3], t .. '\t' .. user)
    end
  end
  redis.call('DEL', conns_key)
end
redis.call('DEL', KEYS[1])
return removed
"#;

/// Takes the UserOffline announcements that are due. Each is taken by exactly one caller.
/// KEYS: 1 pending offline set. ARGV: 1 now (ms), 2 key prefix.
/// Returns {tenant1, user1, tenant2, user2, …} for users still offline.
pub const PRESENCE_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, m in ipairs(due) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    local t, user = string.match(m, '^([^\t]*)\t(.*)$')
    if t and redis.call('HEXISTS', ARGV[2] .. ':presence:' .. t .. ':users', user) == 0 then
      out[#out + 1] = t
      out[#out + 1] = user
    end
  end
end
return out
"#;
