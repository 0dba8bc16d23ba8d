//! The Lua scripts that make each cluster operation one atomic step in Redis.
//!
//! A channel's keys share one hash tag (`{<channel>}`, or its partition's `{p<n>}` on a Redis
//! Cluster), and so do the keys of one presence partition (see `keys.rs`): every script touches
//! one slot. The presence scripts also derive key names from the partition's stem (passed as an
//! argument), which carries that hash tag.

/// Publishes one event: next offset, bounded history append, PUBLISH (SPUBLISH on a Redis
/// Cluster, where KEYS and the sharded channel share one hash tag) — atomically.
///
/// KEYS: 1 offset, 2 epoch, 3 history stream, 4 idempotency key (or an unused dummy).
/// ARGV: 1 envelope up to `"offset":`, 2 envelope tail after the epoch (`,"origin":…}`),
///       3 pub/sub channel, 4 history size, 5 time-to-live (ms), 6 "1" when KEYS[4] is used,
///       7 `PUBLISH` or `SPUBLISH`.
/// Returns {offset, epoch}; when the idempotency key says the event was already published (a
/// retry whose earlier attempt ran but lost its reply, on this master or, replicated, on the
/// replica promoted in its place), the offset and epoch it was published at, which the key holds
/// as `<offset> <epoch>`: the retry's acknowledgement names the event subscribers got. (A key of
/// an older version holds `1` and answers offset 0.)
///
/// The epoch is regenerated (and offsets restart) whenever the offset key is missing: after
/// history loss (a Redis restart without persistence, eviction, expiry) a client's old position
/// can never be mistaken for a new one.
pub const PUBLISH: &str = r#"
if ARGV[6] == "1" then
  local done = redis.call('GET', KEYS[4])
  if done then
    local offset, epoch = string.match(done, '^(%d+) (.*)$')
    return {tonumber(offset) or 0, epoch or redis.call('GET', KEYS[2]) or ''}
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
if ARGV[6] == "1" then
  redis.call('SET', KEYS[4], offset .. ' ' .. epoch, 'PX', ARGV[5])
end
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

/// Registers a connection in cluster-wide presence. Every key is in the tenant's presence
/// partition.
///
/// KEYS: 1 this node's connections of the tenant (hash conn → "user\trole"), 2 the tenant's
/// user counts (hash user → n), 3 this node's tenants of the partition (set), 4 the partition's
/// pending offline announcements (sorted set "tenant\tuser" → due ms).
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

/// Unregisters a connection. KEYS (the tenant's presence partition): 1 connections, 2 user
/// counts, 3 pending offline set. ARGV: 1 conn, 2 user, 3 tenant, 4 due time (ms). When it was
/// the user's last connection anywhere, schedules UserOffline at the due time. Returns 1 then,
/// else 0.
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

/// Lua defining `drop_node(stem, node, pending, due)`: removes every connection a node has in
/// one presence partition (`stem`, see `keys.rs`) and its tenants set there; users whose last
/// connection went with it get a pending UserOffline at `due`. Returns the connections removed.
/// Shared by [`PRESENCE_DROP_NODE`] and [`PRESENCE_BEAT`].
macro_rules! drop_node_lua {
    () => {
        r#"
local function drop_node(stem, node, pending, due)
  local removed = 0
  local tenants_key = stem .. ':node:' .. node .. ':tenants'
  for _, t in ipairs(redis.call('SMEMBERS', tenants_key)) do
    local conns_key = stem .. ':presence:' .. t .. ':node:' .. node
    local users_key = stem .. ':presence:' .. t .. ':users'
    local conns = redis.call('HGETALL', conns_key)
    for i = 2, #conns, 2 do
      local user = string.match(conns[i], '^([^\t]*)')
      removed = removed + 1
      local n = redis.call('HINCRBY', users_key, user, -1)
      if n <= 0 then
        redis.call('HDEL', users_key, user)
        redis.call('ZADD', pending, due, t .. '\t' .. user)
      end
    end
    redis.call('DEL', conns_key)
  end
  redis.call('DEL', tenants_key)
  return removed
end
"#
    };
}

/// Removes a node from one presence partition (its graceful stop): its heartbeat entry and
/// every connection it has there (see `drop_node` above).
///
/// KEYS: 1 the partition's nodes (sorted set), 2 its pending offline set. ARGV: 1 the
/// partition's key stem, 2 node id, 3 due time (ms). Returns the number of connections removed.
pub const PRESENCE_DROP_NODE: &str = concat!(
    drop_node_lua!(),
    r#"
redis.call('ZREM', KEYS[1], ARGV[2])
return drop_node(ARGV[1], ARGV[2], KEYS[2], ARGV[3])
"#
);

/// A node's heartbeat in one presence partition, and the removal of the partition's dead nodes,
/// in one atomic step: records this node's beat, refreshes the time-to-live of its presence
/// there, then removes every node whose last beat is older than the limit (its entry and its
/// connections, see `drop_node` above), so each dead node is removed by exactly one caller.
///
/// KEYS: 1 the partition's nodes (sorted set node → last beat ms), 2 its pending offline set,
/// 3 this node's tenants set there. ARGV: 1 the partition's key stem, 2 this node's id, 3 now
/// (ms), 4 presence time-to-live (ms), 5 nodes last beating before this (ms) are dead, 6 due
/// time (ms) of the UserOffline of their users. Returns {node1, removed1, node2, removed2, …}
/// for the dead nodes removed.
pub const PRESENCE_BEAT: &str = concat!(
    drop_node_lua!(),
    r#"
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
for _, t in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('PEXPIRE', ARGV[1] .. ':presence:' .. t .. ':node:' .. ARGV[2], ARGV[4])
end
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])) do
  redis.call('ZREM', KEYS[1], node)
  out[#out + 1] = node
  out[#out + 1] = drop_node(ARGV[1], node, KEYS[2], ARGV[6])
end
return out
"#
);

/// Takes a presence partition's UserOffline announcements that are due. Each is taken by
/// exactly one caller. KEYS: 1 the partition's pending offline set. ARGV: 1 now (ms), 2 the
/// partition's key stem. Returns {tenant1, user1, tenant2, user2, …} for users still offline.
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

/// Marks or unmarks a node as listening to a channel (Redis Cluster layout), and keeps the node's
/// index of the channels it marked in that partition, so the marks of a node that died without
/// unmarking can be found ([`UNMARK_NODE`]).
///
/// KEYS: 1 the channel's listeners set, 2 the node's index in the channel's partition (same hash
/// tag). ARGV: 1 node id, 2 channel, 3 "1" to mark, "0" to unmark.
pub const MARK_LISTENING: &str = r#"
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"#;

/// Removes a dead node's listener marks from one partition: every channel in its index there
/// loses the node's mark, then the index goes. Returns how many channels it had.
///
/// KEYS: 1 the node's index in the partition. ARGV: 1 node id, 2 the partition's key stem
/// (`{prefix}:{p<n>}:`; each channel's listeners set is `<stem><channel>:listeners`, same slot).
pub const UNMARK_NODE: &str = r#"
local channels = redis.call('SMEMBERS', KEYS[1])
for _, channel in ipairs(channels) do
  redis.call('SREM', ARGV[2] .. channel .. ':listeners', ARGV[1])
end
redis.call('DEL', KEYS[1])
return #channels
"#;
