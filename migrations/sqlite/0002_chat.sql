-- Chat: conversations, their participants and their messages (SQLite; docs/chat.md).
-- Times are milliseconds since the Unix epoch. Everything is tenant-scoped through the
-- conversation's tenant_key (messages repeat it for the per-recipient queries).

CREATE TABLE conversations (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_key         TEXT NOT NULL,
    -- 'direct' (two users; made by SendMessage) or 'group' (POST /api/v1/conversations).
    kind               TEXT NOT NULL,
    -- Direct conversations: the two user ids, sorted, joined by a tab; one per pair and tenant.
    direct_key         TEXT,
    created_by         TEXT NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    last_message_at_ms INTEGER
);

CREATE UNIQUE INDEX conversations_direct ON conversations (tenant_key, direct_key);

CREATE TABLE conversation_participants (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL,
    joined_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_participants_by_user ON conversation_participants (user_id);

CREATE TABLE chat_messages (
    -- Insertion order: history pages and offline delivery follow it.
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    tenant_key      TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    -- The other user of a direct conversation.
    recipient_id    TEXT,
    message_type    TEXT NOT NULL,
    -- Exactly as sent; never interpreted.
    content         TEXT NOT NULL,
    -- The sender's temporary id, when it gave one.
    temp_id         TEXT,
    created_at_ms   INTEGER NOT NULL,
    -- When a connection of the recipient was sent the message (NULL: waits for the next one).
    delivered_at_ms INTEGER,
    -- When the recipient marked it read (MarkRead).
    read_at_ms      INTEGER
);

CREATE INDEX chat_messages_history ON chat_messages (conversation_id, seq);
CREATE INDEX chat_messages_pending ON chat_messages (tenant_key, recipient_id, seq)
    WHERE delivered_at_ms IS NULL;
CREATE INDEX chat_messages_unread ON chat_messages (conversation_id, recipient_id)
    WHERE read_at_ms IS NULL;
