//! Chat: conversations with their participants, and messages with delivery and read state
//! (`docs/chat.md`). Every query is scoped by the caller's tenant.
//!
//! A direct conversation is found by its `direct_key` (the two user ids, sorted), unique per
//! tenant, so two concurrent first messages between the same pair meet in one conversation.
//! Delivery is recorded, never assumed: a message stays undelivered (and is read again for each
//! connection of its recipient that opens) until a connection of the recipient took it, which
//! marks it delivered (`docs/chat.md`).

use switchyard_actors::ids::{TenantKey, UserId};

use super::{on_db, Store, StoreError};

/// What kind of conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversationKind {
    /// Two users; made by the first `SendMessage` between them.
    Direct,
    /// Any number of users; made with `POST /api/v1/conversations`.
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "direct" => Ok(ConversationKind::Direct),
            "group" => Ok(ConversationKind::Group),
            other => Err(StoreError::Corrupt(format!(
                "unknown conversation kind {other:?}"
            ))),
        }
    }
}

/// One conversation as stored, with its participants.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub id: String,
    pub tenant_key: String,
    pub kind: ConversationKind,
    pub created_by: String,
    pub created_at_ms: i64,
    pub last_message_at_ms: Option<i64>,
    pub participants: Vec<String>,
    /// Messages to the reader not read yet (only in [`Store::conversations_of`]).
    pub unread: i64,
}

/// One stored message.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub tenant_key: String,
    pub sender_id: String,
    pub recipient_id: Option<String>,
    pub message_type: String,
    pub content: String,
    pub temp_id: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub read_at_ms: Option<i64>,
}

/// A user's standing in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Participation {
    Participant,
    /// The conversation exists in the tenant, but the user is not in it.
    Outsider,
    /// No such conversation in the tenant (it may exist in another one).
    NoConversation,
}

/// A message about to be stored.
#[derive(Clone, Debug)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub conversation_id: &'a str,
    pub tenant: &'a TenantKey,
    pub sender: &'a UserId,
    pub recipient: &'a UserId,
    pub message_type: &'a str,
    pub content: &'a str,
    pub temp_id: Option<&'a str>,
    pub now_ms: i64,
}

macro_rules! message_columns {
    () => {
        "id, conversation_id, tenant_key, sender_id, recipient_id, message_type, content, \
         temp_id, created_at_ms, delivered_at_ms, read_at_ms"
    };
}

const FIND_DIRECT: &str = "SELECT id FROM conversations WHERE tenant_key = $1 AND direct_key = $2";

const INSERT_CONVERSATION: &str = "INSERT INTO conversations \
     (id, tenant_key, kind, direct_key, created_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (tenant_key, direct_key) DO NOTHING";

const INSERT_PARTICIPANT: &str = "INSERT INTO conversation_participants \
     (conversation_id, user_id, joined_at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (conversation_id, user_id) DO NOTHING";

const SELECT_CONVERSATION: &str = "SELECT id, tenant_key, kind, created_by, created_at_ms, \
     last_message_at_ms FROM conversations WHERE tenant_key = $1 AND id = $2";

const SELECT_PARTICIPANTS: &str = "SELECT user_id FROM conversation_participants \
     WHERE conversation_id = $1 ORDER BY joined_at_ms, user_id";

const PARTICIPATION: &str = "SELECT EXISTS (SELECT 1 FROM conversation_participants p \
     WHERE p.conversation_id = c.id AND p.user_id = $3) \
     FROM conversations c WHERE c.tenant_key = $1 AND c.id = $2";

const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO chat_messages (",
    message_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
);

const TOUCH_CONVERSATION: &str = "UPDATE conversations SET last_message_at_ms = $2 WHERE id = $1";

/// Marks messages to one recipient delivered: `$1` tenant, `$2` recipient, `$3` now, `$4` the
/// ids as a JSON array (one statement for any number, on both databases).
macro_rules! mark_delivered_sql {
    ($ids:literal) => {
        concat!(
            "UPDATE chat_messages SET delivered_at_ms = $3 \
             WHERE tenant_key = $1 AND recipient_id = $2 AND delivered_at_ms IS NULL AND id IN (",
            $ids,
            ")"
        )
    };
}

/// A recipient's undelivered messages, oldest first: `$1` tenant, `$2` user, `$3` limit.
const UNDELIVERED: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM chat_messages WHERE tenant_key = $1 AND recipient_id = $2 AND delivered_at_ms IS NULL \
     ORDER BY seq LIMIT $3"
);

const MARK_READ: &str = "UPDATE chat_messages SET read_at_ms = $4, \
     delivered_at_ms = COALESCE(delivered_at_ms, $4) \
     WHERE tenant_key = $1 AND conversation_id = $2 AND recipient_id = $3 AND read_at_ms IS NULL";

const CONVERSATIONS_OF: &str = "SELECT c.id, c.tenant_key, c.kind, c.created_by, \
     c.created_at_ms, c.last_message_at_ms, \
     (SELECT COUNT(*) FROM chat_messages m WHERE m.conversation_id = c.id \
        AND m.recipient_id = $2 AND m.read_at_ms IS NULL) AS unread \
     FROM conversations c JOIN conversation_participants p ON p.conversation_id = c.id \
     WHERE c.tenant_key = $1 AND p.user_id = $2 \
     ORDER BY COALESCE(c.last_message_at_ms, c.created_at_ms) DESC, c.id LIMIT $3";

const PARTICIPANTS_OF_USERS_CONVERSATIONS: &str = "SELECT q.conversation_id, q.user_id \
     FROM conversation_participants p \
     JOIN conversations c ON c.id = p.conversation_id \
     JOIN conversation_participants q ON q.conversation_id = p.conversation_id \
     WHERE c.tenant_key = $1 AND p.user_id = $2 \
     ORDER BY q.conversation_id, q.joined_at_ms, q.user_id";

const CONTACTS: &str = "SELECT DISTINCT q.user_id FROM conversation_participants p \
     JOIN conversations c ON c.id = p.conversation_id \
     JOIN conversation_participants q ON q.conversation_id = p.conversation_id \
     WHERE c.tenant_key = $1 AND p.user_id = $2 AND q.user_id <> $2 ORDER BY q.user_id";

const MESSAGE_SEQ: &str = "SELECT seq FROM chat_messages WHERE conversation_id = $1 AND id = $2";

const HISTORY: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM chat_messages WHERE conversation_id = $1 AND ($2 IS NULL OR seq < $2) \
     ORDER BY seq DESC LIMIT $3"
);

type ConversationRow = (String, String, String, String, i64, Option<i64>);

fn conversation(
    row: ConversationRow,
    participants: Vec<String>,
    unread: i64,
) -> Result<Conversation, StoreError> {
    let (id, tenant_key, kind, created_by, created_at_ms, last_message_at_ms) = row;
    Ok(Conversation {
        kind: ConversationKind::parse(&kind)?,
        id,
        tenant_key,
        created_by,
        created_at_ms,
        last_message_at_ms,
        participants,
        unread,
    })
}

/// The key of the direct conversation between `a` and `b` (order does not matter).
fn direct_key(a: &UserId, b: &UserId) -> String {
    let (x, y) = if a.as_str() <= b.as_str() {
        (a, b)
    } else {
        (b, a)
    };
    format!("{x}\t{y}")
}

/// A new conversation id (time-ordered, so ids sort roughly by creation).
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A page of a conversation's history.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// Older messages exist before the first one.
    pub has_more: bool,
}

impl Store {
    /// The direct conversation of `a` and `b` in `tenant`, created (with both as participants)
    /// if it does not exist yet.
    pub async fn direct_conversation(
        &self,
        tenant: &TenantKey,
        a: &UserId,
        b: &UserId,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let key = direct_key(a, b);
        let t = tenant.as_str();
        on_db!(&self.db, pool => {
            let found: Option<(String,)> = sqlx::query_as(FIND_DIRECT)
                .bind(t)
                .bind(&key)
                .fetch_optional(pool)
                .await?;
            if let Some((id,)) = found {
                return Ok(id);
            }
            let mut tx = pool.begin().await?;
            let id = new_id();
            sqlx::query(INSERT_CONVERSATION)
                .bind(&id)
                .bind(t)
                .bind(ConversationKind::Direct.as_str())
                .bind(&key)
                .bind(a.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            // Another node may have created it first: use whichever row exists.
            let (id,): (String,) = sqlx::query_as(FIND_DIRECT)
                .bind(t)
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
            for user in [a, b] {
                sqlx::query(INSERT_PARTICIPANT)
                    .bind(&id)
                    .bind(user.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Creates a group conversation of `participants` (the creator among them) in `tenant`.
    pub async fn create_group(
        &self,
        tenant: &TenantKey,
        created_by: &str,
        participants: &[UserId],
        now_ms: i64,
    ) -> Result<Conversation, StoreError> {
        let id = new_id();
        let t = tenant.as_str();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT_CONVERSATION)
                .bind(&id)
                .bind(t)
                .bind(ConversationKind::Group.as_str())
                .bind(None::<String>)
                .bind(created_by)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            for user in participants {
                sqlx::query(INSERT_PARTICIPANT)
                    .bind(&id)
                    .bind(user.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        self.conversation(tenant, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))
    }

    /// One conversation of `tenant` with its participants.
    pub async fn conversation(
        &self,
        tenant: &TenantKey,
        id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let (row, participants): (Option<ConversationRow>, Vec<(String,)>) = on_db!(&self.db, pool => {
            let row = sqlx::query_as(SELECT_CONVERSATION)
                .bind(tenant.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await?;
            let participants = sqlx::query_as(SELECT_PARTICIPANTS)
                .bind(id)
                .fetch_all(pool)
                .await?;
            (row, participants)
        });
        row.map(|r| conversation(r, participants.into_iter().map(|(u,)| u).collect(), 0))
            .transpose()
    }

    /// Whether `user` takes part in conversation `id` of `tenant`.
    pub async fn participation(
        &self,
        tenant: &TenantKey,
        id: &str,
        user: &UserId,
    ) -> Result<Participation, StoreError> {
        let row: Option<(bool,)> = on_db!(&self.db, pool => {
            sqlx::query_as(PARTICIPATION)
                .bind(tenant.as_str())
                .bind(id)
                .bind(user.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(match row {
            None => Participation::NoConversation,
            Some((true,)) => Participation::Participant,
            Some((false,)) => Participation::Outsider,
        })
    }

    /// Stores a message (undelivered, unread) and moves its conversation's last activity.
    pub async fn insert_message(&self, m: &NewMessage<'_>) -> Result<StoredMessage, StoreError> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT_MESSAGE)
                .bind(m.id)
                .bind(m.conversation_id)
                .bind(m.tenant.as_str())
                .bind(m.sender.as_str())
                .bind(m.recipient.as_str())
                .bind(m.message_type)
                .bind(m.content)
                .bind(m.temp_id)
                .bind(m.now_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query(TOUCH_CONVERSATION)
                .bind(m.conversation_id)
                .bind(m.now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(StoredMessage {
            id: m.id.to_owned(),
            conversation_id: m.conversation_id.to_owned(),
            tenant_key: m.tenant.as_str().to_owned(),
            sender_id: m.sender.as_str().to_owned(),
            recipient_id: Some(m.recipient.as_str().to_owned()),
            message_type: m.message_type.to_owned(),
            content: m.content.to_owned(),
            temp_id: m.temp_id.map(str::to_owned),
            created_at_ms: m.now_ms,
            delivered_at_ms: None,
            read_at_ms: None,
        })
    }

    /// Records that a connection of `recipient` took the messages `ids` (those of another
    /// recipient or tenant, or already delivered, are left alone); returns how many were marked.
    pub async fn mark_delivered(
        &self,
        tenant: &TenantKey,
        recipient: &UserId,
        ids: &[&str],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let ids = serde_json::Value::from(ids.to_vec()).to_string();
        let done = match &self.db {
            super::Db::Sqlite(pool) => {
                sqlx::query(mark_delivered_sql!("SELECT value FROM json_each($4)"))
                    .bind(tenant.as_str())
                    .bind(recipient.as_str())
                    .bind(now_ms)
                    .bind(ids)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            super::Db::Postgres(pool) => sqlx::query(mark_delivered_sql!(
                "SELECT jsonb_array_elements_text($4::jsonb)"
            ))
            .bind(tenant.as_str())
            .bind(recipient.as_str())
            .bind(now_ms)
            .bind(ids)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(done)
    }

    /// Up to `limit` of `user`'s undelivered messages, oldest first. Reading them marks
    /// nothing: a message is delivered once a connection took it ([`Store::mark_delivered`]).
    pub async fn undelivered(
        &self,
        tenant: &TenantKey,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(on_db!(&self.db, pool => {
            sqlx::query_as(UNDELIVERED)
                .bind(tenant.as_str())
                .bind(user.as_str())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Marks every unread message to `user` in conversation `id` read; returns how many.
    pub async fn mark_read(
        &self,
        tenant: &TenantKey,
        id: &str,
        user: &UserId,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(on_db!(&self.db, pool => {
            sqlx::query(MARK_READ)
                .bind(tenant.as_str())
                .bind(id)
                .bind(user.as_str())
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// `user`'s conversations in `tenant`, most recently active first, with participants and
    /// the number of messages to `user` not read yet.
    pub async fn conversations_of(
        &self,
        tenant: &TenantKey,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError> {
        type Row = (String, String, String, String, i64, Option<i64>, i64);
        let (rows, members): (Vec<Row>, Vec<(String, String)>) = on_db!(&self.db, pool => {
            let rows = sqlx::query_as(CONVERSATIONS_OF)
                .bind(tenant.as_str())
                .bind(user.as_str())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            let members = sqlx::query_as(PARTICIPANTS_OF_USERS_CONVERSATIONS)
                .bind(tenant.as_str())
                .bind(user.as_str())
                .fetch_all(pool)
                .await?;
            (rows, members)
        });
        let mut by_conversation: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (c, u) in members {
            by_conversation.entry(c).or_default().push(u);
        }
        rows.into_iter()
            .map(|(id, t, kind, by, at, last, unread)| {
                let participants = by_conversation.remove(&id).unwrap_or_default();
                conversation((id, t, kind, by, at, last), participants, unread)
            })
            .collect()
    }

    /// The users who share a conversation with `user` in `tenant`.
    pub async fn contacts(
        &self,
        tenant: &TenantKey,
        user: &UserId,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as(CONTACTS)
                .bind(tenant.as_str())
                .bind(user.as_str())
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// Up to `limit` messages of conversation `id` older than message `before` (the newest when
    /// `None`), oldest first. `Ok(None)` when `before` is not a message of the conversation.
    pub async fn history(
        &self,
        id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Option<HistoryPage>, StoreError> {
        let fetch = i64::from(limit) + 1;
        let page: Option<Vec<StoredMessage>> = on_db!(&self.db, pool => {
            let before_seq = match before {
                None => Some(None),
                Some(b) => {
                    let seq: Option<(i64,)> = sqlx::query_as(MESSAGE_SEQ)
                        .bind(id)
                        .bind(b)
                        .fetch_optional(pool)
                        .await?;
                    seq.map(|(s,)| Some(s))
                }
            };
            match before_seq {
                None => None,
                Some(seq) => Some(
                    sqlx::query_as(HISTORY)
                        .bind(id)
                        .bind(seq)
                        .bind(fetch)
                        .fetch_all(pool)
                        .await?,
                ),
            }
        });
        Ok(page.map(|mut messages| {
            let has_more = messages.len() as i64 > i64::from(limit);
            messages.truncate(limit as usize);
            messages.reverse();
            HistoryPage { messages, has_more }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_keys_ignore_the_order() {
        let (a, b) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        assert_eq!(direct_key(&a, &b), direct_key(&b, &a));
        assert_eq!(direct_key(&a, &b), "alice\tbob");
    }
}
