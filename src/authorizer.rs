//! The database-checked channel rules ([`ChannelAuthorizer`] over the [`Store`]).
//!
//! - `notifications:{EntityType}:{EntityId}`: the entity's row is looked up in its table (the
//!   change feed's entity map gives the table) and its `tenant_key` compared with the caller's:
//!   members of the row's tenant may subscribe, `Service` always may. A row without a tenant is
//!   open to every member of any tenant. A row that does not exist cannot be watched (except by
//!   `Service`): otherwise a tenant could wait for another tenant's row to be created.
//!   Authorization happens at subscribe time; moving a row to another tenant does not end
//!   subscriptions already granted.
//! - `conversation:{id}`: the conversation's participants only (checked in the store, within the
//!   caller's tenant: another tenant's conversation looks like none). Raw `publish` there is
//!   refused to everyone but `Service`: chat events are sent by the chat hub methods, so a client
//!   cannot forge one (`docs/chat.md`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_actors::change_feed::EntityMap;
use switchyard_actors::channel::{Channel, ChannelName};
use switchyard_actors::identity::{Identity, Role};
use switchyard_actors::ids::TenantKey;
use switchyard_actors::policy::access::Action;
use switchyard_actors::policy::{ChannelAuthorizer, Refusal, RuleViolation};

use crate::store::{EntityOwner, Participation, Store, StoreError};

const ENTITY_RULE: &str = "notifications:{EntityType}:{EntityId}";
const CONVERSATION_RULE: &str = "conversation:{id}";

/// Channel rules that need stored data, decided against the store.
pub struct StoreAuthorizer {
    store: Store,
    entities: Arc<EntityMap>,
}

impl StoreAuthorizer {
    pub fn new(store: Store, entities: Arc<EntityMap>) -> Self {
        Self { store, entities }
    }
}

fn refuse(rule: String) -> Result<(), Refusal> {
    Err(RuleViolation { rule }.into())
}

/// The store failed: the rule could not be checked (the caller may retry).
fn unchecked(rule: String) -> Result<(), Refusal> {
    Err(Refusal::Unchecked(RuleViolation { rule }))
}

impl ChannelAuthorizer for StoreAuthorizer {
    fn authorize(
        &self,
        who: Arc<Identity>,
        channel: ChannelName,
        action: Action,
    ) -> BoxFuture<'static, Result<(), Refusal>> {
        let store = self.store.clone();
        let entities = self.entities.clone();
        Box::pin(async move {
            match channel.kind() {
                Channel::Notifications {
                    entity_type,
                    entity_id,
                } => {
                    if who.role == Role::Service {
                        return Ok(());
                    }
                    if action == Action::Publish {
                        return refuse(format!(
                            "{ENTITY_RULE}: only the database change feed (or Service) publishes"
                        ));
                    }
                    let table = entities.table_for(entity_type);
                    match store.entity_owner(&table, entity_id).await {
                        Ok(EntityOwner::Tenant(t)) => {
                            let member = who.role.is_tenant_bound()
                                && who.tenant.as_ref().map(|k| k.as_str()) == Some(t.as_str());
                            if member {
                                Ok(())
                            } else {
                                refuse(format!(
                                    "{ENTITY_RULE}: members of the row's tenant only \
                                     ({entity_type} {entity_id} belongs to another tenant)"
                                ))
                            }
                        }
                        Ok(EntityOwner::Shared) if who.role.is_tenant_bound() => Ok(()),
                        Ok(EntityOwner::Shared) => refuse(format!(
                            "{ENTITY_RULE}: members of a tenant or Service only"
                        )),
                        Ok(EntityOwner::Missing) => refuse(format!(
                            "{ENTITY_RULE}: only existing rows can be watched \
                             (no {entity_type} {entity_id} in table {table}); Service may watch any"
                        )),
                        Err(StoreError::NeedsPostgres(what)) => refuse(format!(
                            "{ENTITY_RULE}: {what} needs Postgres; this node runs on SQLite"
                        )),
                        Err(e) => {
                            log::warn!(
                                "checking {channel} for user {} (tenant {:?}): {e}",
                                who.user_id,
                                who.tenant
                            );
                            unchecked(format!(
                                "{ENTITY_RULE}: the row's tenant could not be checked; retry later"
                            ))
                        }
                    }
                }
                Channel::Conversation { id } => {
                    if action == Action::Publish {
                        return refuse(format!(
                            "{CONVERSATION_RULE}: events are sent through the chat hub methods \
                             (SendMessage, StartTyping, …); only Service publishes directly"
                        ));
                    }
                    let tenant: Option<&TenantKey> =
                        who.tenant.as_ref().filter(|_| who.role.is_tenant_bound());
                    let Some(tenant) = tenant else {
                        return refuse(format!(
                            "{CONVERSATION_RULE}: participants only (members of a tenant)"
                        ));
                    };
                    match store.participation(tenant, id, &who.user_id).await {
                        Ok(Participation::Participant) => Ok(()),
                        Ok(_) => refuse(format!("{CONVERSATION_RULE}: participants only")),
                        Err(e) => {
                            log::warn!(
                                "checking {channel} for user {} (tenant {tenant}): {e}",
                                who.user_id
                            );
                            unchecked(format!(
                                "{CONVERSATION_RULE}: participation could not be checked; retry later"
                            ))
                        }
                    }
                }
                _ => refuse(format!("{channel}: not a database-checked channel")),
            }
        })
    }
}
