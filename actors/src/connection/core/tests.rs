//! Unit tests of the connection core: no socket, no actor, no node. Each test drives the core as
//! the actor does (frame facts, decoded records, ticks, the answers of the work it hands out) and
//! checks the effects it hands back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConnectionCore, Effect, Tick};
use crate::channel::ChannelName;
use crate::codec::{Decoded, OutFrame, Outcome, ReplyTo, Request, RequestId};
use crate::codes::{CloseCode, ErrorCode};
use crate::connection::inbound::Admission;
use crate::connection::ConnectionSettings;
use crate::identity::{Identity, Role};
use crate::ids::{TenantKey, UserId};
use crate::policy;

const RATE: u32 = 1;
const BURST: u32 = 3;
const MAX_VIOLATIONS: u32 = 2;
const MAX_BAD_FRAMES: u32 = 2;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_PUBLISHES_IN_FLIGHT: usize = 3;

fn settings() -> ConnectionSettings {
    ConnectionSettings {
        max_frame_bytes: 1 << 16,
        heartbeat_interval: Duration::from_secs(5),
        client_timeout: CLIENT_TIMEOUT,
        write_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        max_subscriptions: 8,
        rate_per_second: RATE,
        rate_burst: BURST,
        max_rate_violations: MAX_VIOLATIONS,
        rate_exempt_roles: vec![Role::Service],
        max_bad_frames: MAX_BAD_FRAMES,
        close_on_token_expiry: true,
        resume_buffer_bytes: 1 << 16,
        max_publishes_in_flight: MAX_PUBLISHES_IN_FLIGHT,
        max_write_chunk_bytes: 1 << 16,
    }
}

fn staff() -> Identity {
    Identity {
        user_id: UserId::parse("u1").unwrap(),
        tenant: Some(TenantKey::parse("t1").unwrap()),
        role: Role::Staff,
        session_id: None,
        expires_at: None,
        issuer: None,
    }
}

fn core_for(identity: Identity) -> ConnectionCore {
    ConnectionCore::new(&settings(), Arc::new(identity), Instant::now())
}

fn core() -> ConnectionCore {
    core_for(staff())
}

fn id(n: i64) -> ReplyTo {
    Some(RequestId::Number(n))
}

fn req(n: i64, request: Request) -> Decoded {
    Decoded::request(id(n), request)
}

fn subscribe(n: i64, channel: &str) -> Decoded {
    let channel = channel.to_owned();
    req(
        n,
        Request::Subscribe {
            channel,
            since: None,
        },
    )
}

fn unsubscribe(n: i64, channel: &str) -> Decoded {
    let channel = channel.to_owned();
    req(n, Request::Unsubscribe { channel })
}

fn publish(n: i64, channel: &str, event: &str) -> Decoded {
    req(
        n,
        Request::Publish {
            channel: channel.to_owned(),
            event: event.to_owned(),
            data: Arc::from(serde_json::value::RawValue::from_string("{}".into()).unwrap()),
        },
    )
}

/// Every effect the core hands out now.
fn drain(core: &mut ConnectionCore) -> Vec<Effect> {
    std::iter::from_fn(|| core.poll()).collect()
}

/// One frame's records, within the rate.
fn frame(core: &mut ConnectionCore, records: impl IntoIterator<Item = Decoded>) -> Vec<Effect> {
    core.queue_frame(records, Admission::Within);
    drain(core)
}

fn rate_limited_reply() -> Outcome {
    Outcome::Error {
        code: ErrorCode::RateLimited,
        message: format!("more than {RATE} frames per second; this request was not processed"),
    }
}

fn subscribed(channel: &ChannelName) -> Outcome {
    Outcome::Subscribed {
        channel: channel.to_string(),
        subscription_id: 1,
        offset: 0,
        epoch: Arc::from("e"),
        recovered: None,
    }
}

/// The reply a `Reply` effect carries, as (id, outcome).
fn reply(e: &Effect) -> Option<(ReplyTo, Outcome)> {
    match e {
        Effect::Reply { reply_to, outcome } => Some((reply_to.clone(), outcome.clone())),
        _ => None,
    }
}

fn published() -> Outcome {
    Outcome::Published {
        id: Arc::from("x"),
        offset: 1,
        epoch: Arc::from("e"),
    }
}

/// Runs the core to the end as the actor would, answering every piece of work it hands out at
/// once; returns the reply address of every reply, in order.
fn run_answering(core: &mut ConnectionCore) -> Vec<ReplyTo> {
    let mut replies = Vec::new();
    while let Some(effect) = core.poll() {
        if let Effect::Publish { ticket, .. } = effect {
            core.publish_done(ticket, published());
            continue;
        }
        let answer = match effect {
            Effect::Reply { reply_to, .. } | Effect::SubscriptionRefused { reply_to, .. } => {
                replies.push(reply_to);
                None
            }
            Effect::Rejected { reply_to, .. } => {
                replies.push(reply_to);
                None
            }
            Effect::Join {
                reply_to, channel, ..
            } => {
                core.subs.begin(&channel).unwrap();
                core.subs.activate(&channel, 0, Arc::from("e"), Vec::new());
                Some((reply_to, subscribed(&channel)))
            }
            Effect::Invoke { reply_to, .. } => Some((reply_to, Outcome::Done)),
            _ => None,
        };
        if let Some((reply_to, outcome)) = answer {
            let e = core.finish(reply_to, outcome);
            replies.push(reply(&e).unwrap().0);
        }
    }
    replies
}

#[test]
fn the_burst_is_allowed_then_requests_are_refused_with_the_rate_limit_error() {
    let mut core = core();
    for n in 1..=i64::from(BURST) {
        assert_eq!(core.admit_frame(), Admission::Within);
        let effects = frame(&mut core, [req(n, Request::Ping)]);
        assert_eq!(reply(&effects[0]), Some((id(n), Outcome::Pong)));
    }
    let over = core.admit_frame();
    assert_eq!(over, Admission::Over);
    core.queue_frame([req(9, Request::Ping)], over);
    let effects = drain(&mut core);
    assert_eq!(effects.len(), 1);
    assert_eq!(reply(&effects[0]), Some((id(9), rate_limited_reply())));
}

#[test]
fn too_many_violations_in_an_interval_close_with_4429_and_a_tick_forgives_them() {
    let mut core = core();
    for _ in 0..BURST {
        assert_eq!(core.admit_frame(), Admission::Within);
    }
    for _ in 0..MAX_VIOLATIONS {
        assert_eq!(core.admit_frame(), Admission::Over);
    }
    assert_eq!(core.admit_frame(), Admission::Close(CloseCode::RateLimited));
    core.tick(Instant::now(), 0);
    assert_eq!(core.admit_frame(), Admission::Over, "a new interval");
}

#[test]
fn an_exempt_role_and_a_resumed_connections_credit_are_not_limited() {
    let mut service = core_for(Identity {
        role: Role::Service,
        tenant: None,
        ..staff()
    });
    for _ in 0..(BURST + MAX_VIOLATIONS + 5) {
        assert_eq!(service.admit_frame(), Admission::Within);
    }
    let mut resumed = core();
    resumed.grant_replay_credit(2);
    for _ in 0..(BURST + 2) {
        assert_eq!(resumed.admit_frame(), Admission::Within);
    }
    assert_eq!(
        resumed.admit_frame(),
        Admission::Over,
        "the credit is used up"
    );
}

#[test]
fn over_the_rate_protocol_records_run_and_requests_without_an_id_share_one_error() {
    let mut core = core();
    let records = [
        Decoded::request(None, Request::Ping),
        Decoded::request(None, Request::Close),
        Decoded::Send(OutFrame::Text("hs".into())),
        Decoded::request(None, Request::Ping),
    ];
    core.queue_frame(records, Admission::Over);
    let effects = drain(&mut core);
    assert!(matches!(effects[0], Effect::Close(CloseCode::Normal)));
    assert!(matches!(&effects[1], Effect::Send(OutFrame::Text(t)) if t == "hs"));
    assert_eq!(reply(&effects[2]), Some((None, rate_limited_reply())));
    assert_eq!(effects.len(), 3);
}

#[test]
fn bad_frames_over_the_limit_in_one_interval_close_with_4400() {
    let mut core = core();
    let reject = |n| Decoded::reject(id(n), ErrorCode::BadRequest, "nope");
    let effects = frame(&mut core, (1..=i64::from(MAX_BAD_FRAMES)).map(reject));
    assert_eq!(
        effects.len(),
        MAX_BAD_FRAMES as usize,
        "only the error replies"
    );
    for (n, e) in (1..).zip(&effects) {
        assert!(matches!(
            e,
            Effect::Rejected { reply_to, code: ErrorCode::BadRequest, message }
                if *reply_to == id(n) && message == "nope"
        ));
    }
    let effects = frame(&mut core, [reject(9)]);
    assert!(
        matches!(effects[0], Effect::Rejected { .. }),
        "answered first"
    );
    assert!(matches!(
        effects[1],
        Effect::Close(CloseCode::TooManyBadFrames)
    ));
}

#[test]
fn the_bad_frame_count_starts_again_every_interval() {
    let mut core = core();
    let reject = |n| Decoded::reject(id(n), ErrorCode::BadRequest, "nope");
    for round in 0..3 {
        let effects = frame(&mut core, (0..i64::from(MAX_BAD_FRAMES)).map(reject));
        assert!(
            effects.iter().all(|e| matches!(e, Effect::Rejected { .. })),
            "round {round}"
        );
        core.tick(Instant::now(), 0);
    }
}

#[test]
fn each_request_kind_gets_its_effect() {
    let mut core = core();
    let e = frame(&mut core, [req(1, Request::Ping)]);
    assert_eq!(reply(&e[0]), Some((id(1), Outcome::Pong)));

    let e = frame(&mut core, [subscribe(2, "no such channel")]);
    assert!(matches!(
        &e[0],
        Effect::SubscriptionRefused { reply_to, channel, code: ErrorCode::BadChannel, .. }
            if *reply_to == id(2) && channel == "no such channel"
    ));

    let e = frame(&mut core, [unsubscribe(3, "tenant:t1:broadcast")]);
    let expected = Outcome::Error {
        code: ErrorCode::NotSubscribed,
        message: "not subscribed to tenant:t1:broadcast".into(),
    };
    assert_eq!(reply(&e[0]), Some((id(3), expected)));

    let e = frame(&mut core, [unsubscribe(4, "???")]);
    assert!(matches!(
        reply(&e[0]),
        Some((to, Outcome::Error { code: ErrorCode::BadChannel, .. })) if to == id(4)
    ));

    let e = frame(&mut core, [publish(5, "???", "E")]);
    assert!(matches!(
        reply(&e[0]),
        Some((to, Outcome::Error { code: ErrorCode::BadChannel, .. })) if to == id(5)
    ));
    let e = frame(&mut core, [publish(6, "tenant:t1:broadcast", "bad event!")]);
    assert!(matches!(
        reply(&e[0]),
        Some((to, Outcome::Error { code: ErrorCode::BadEvent, .. })) if to == id(6)
    ));

    let e = frame(
        &mut core,
        [Decoded::request(None, Request::Ack { sequence_id: 7 })],
    );
    assert!(matches!(e[..], [Effect::Ack(7)]));
    let e = frame(&mut core, [Decoded::Ignore]);
    assert!(e.is_empty());
    let fatal = Decoded::Fatal {
        close: CloseCode::ProtocolError,
        message: "broken".into(),
        farewell: None,
    };
    let e = frame(&mut core, [fatal]);
    assert!(matches!(
        e[..],
        [Effect::Fatal {
            close: CloseCode::ProtocolError,
            ..
        }]
    ));

    // The ones that need the node: handed out, then answered through the core.
    let e = frame(&mut core, [publish(8, "tenant:t1:broadcast", "E")]);
    let [Effect::Publish {
        ticket, channel, ..
    }] = &e[..]
    else {
        panic!("{e:?}")
    };
    assert_eq!(channel.as_str(), "tenant:t1:broadcast");
    core.publish_done(*ticket, Outcome::Done);
    let r = drain(&mut core);
    assert_eq!(reply(&r[0]), Some((id(8), Outcome::Done)));

    let invoke = Request::Invoke {
        method: "SendMessage".into(),
        args: Vec::new(),
    };
    let e = frame(&mut core, [req(9, invoke)]);
    assert!(matches!(&e[..], [Effect::Invoke { reply_to, method, .. }]
        if *reply_to == id(9) && method == "SendMessage"));
    core.finish(id(9), Outcome::Done);

    let e = frame(&mut core, [subscribe(10, "tenant:t1:broadcast")]);
    assert!(
        matches!(&e[..], [Effect::Join { reply_to, raw, since: None, .. }]
        if *reply_to == id(10) && raw == "tenant:t1:broadcast")
    );
    core.finish(id(10), Outcome::Done);

    let e = frame(&mut core, [req(11, Request::Close)]);
    assert!(matches!(e[..], [Effect::Close(CloseCode::Normal)]));
}

#[test]
fn every_request_gets_exactly_one_reply_in_request_order() {
    let mut core = core();
    let invoke = Request::Invoke {
        method: "M".into(),
        args: Vec::new(),
    };
    let records = vec![
        subscribe(1, "tenant:t1:broadcast"),
        req(2, Request::Ping),
        publish(3, "tenant:t1:broadcast", "E"),
        unsubscribe(4, "tenant:t1:broadcast"),
        req(5, invoke),
        subscribe(6, "???"),
        Decoded::reject(id(7), ErrorCode::BadRequest, "nope"),
        publish(8, "tenant:t1:broadcast", "bad event!"),
        unsubscribe(9, "tenant:t1:broadcast"),
    ];
    core.queue_frame(records, Admission::Within);
    let replies = run_answering(&mut core);
    assert_eq!(replies, (1..=9).map(id).collect::<Vec<_>>());
}

#[test]
fn an_unsubscribe_waits_for_the_subscribe_before_it_and_replies_come_in_order() {
    let mut core = core();
    let channel = "tenant:t1:broadcast";
    core.queue_frame(
        [subscribe(1, channel), unsubscribe(2, channel)],
        Admission::Within,
    );
    let Some(Effect::Join {
        channel: joining, ..
    }) = core.poll()
    else {
        panic!("the subscribe starts its join")
    };
    // What the join path does at once: the subscription is pending.
    core.subs.begin(&joining).unwrap();
    assert!(core.poll().is_none(), "the unsubscribe waits");
    // More requests arriving meanwhile wait too.
    core.queue_frame([req(3, Request::Ping)], Admission::Within);
    assert!(core.poll().is_none());

    // The broker answered: the subscription is active, and the subscribe gets its reply.
    core.subs.activate(&joining, 0, Arc::from("e"), Vec::new());
    let r = core.finish(id(1), subscribed(&joining));
    assert_eq!(reply(&r).unwrap().0, id(1));

    let effects = drain(&mut core);
    assert!(matches!(&effects[0], Effect::Left(c) if *c == joining));
    let unsubscribed = Outcome::Unsubscribed {
        channel: channel.into(),
    };
    assert_eq!(reply(&effects[1]), Some((id(2), unsubscribed)));
    assert_eq!(reply(&effects[2]), Some((id(3), Outcome::Pong)));
    assert!(!core.subs.contains(&joining));
}

#[test]
fn an_unsubscribe_after_a_refused_subscribe_finds_nothing_to_leave() {
    let mut core = core();
    let channel = "tenant:t1:broadcast";
    core.queue_frame(
        [subscribe(1, channel), unsubscribe(2, channel)],
        Admission::Within,
    );
    let Some(Effect::Join {
        channel: joining,
        raw,
        ..
    }) = core.poll()
    else {
        panic!("the subscribe starts its join")
    };
    core.subs.begin(&joining).unwrap();
    assert!(core.poll().is_none());
    core.subs.cancel(&joining);
    let refused = core.refuse_subscription(id(1), raw, ErrorCode::Forbidden, "rule".into());
    assert!(matches!(
        refused,
        Effect::SubscriptionRefused { reply_to, code: ErrorCode::Forbidden, .. } if reply_to == id(1)
    ));
    let effects = drain(&mut core);
    assert!(matches!(
        reply(&effects[0]),
        Some((to, Outcome::Error { code: ErrorCode::NotSubscribed, .. })) if to == id(2)
    ));
}

#[test]
fn a_hub_methods_inner_work_holds_the_queue_until_all_is_done() {
    let mut core = core();
    let invoke = Request::Invoke {
        method: "JoinConversation".into(),
        args: Vec::new(),
    };
    core.queue_frame([req(1, invoke), req(2, Request::Ping)], Admission::Within);
    assert!(matches!(core.poll(), Some(Effect::Invoke { .. })));
    // The method's reply, then one of its joins, each held by the actor.
    core.hold();
    assert!(core.poll().is_none());
    core.hold();
    core.release();
    assert!(core.poll().is_none());
    core.finish(id(1), Outcome::Done);
    assert!(core.poll().is_none(), "the join is still held");
    core.release();
    assert_eq!(reply(&core.poll().unwrap()), Some((id(2), Outcome::Pong)));
}

#[test]
fn a_handshake_joins_the_default_channels_then_answers_then_runs_later_requests() {
    let identity = staff();
    let defaults = policy::default_channels(&identity);
    assert!(!defaults.is_empty());
    let mut core = core_for(identity);
    let hello = OutFrame::Text("{}\u{1e}".into());
    let handshake = Request::HandshakeComplete {
        reply: hello.clone(),
    };
    core.queue_frame(
        [Decoded::request(None, handshake), req(1, Request::Ping)],
        Admission::Within,
    );
    assert!(matches!(core.poll(), Some(Effect::HandshakeAccepted)));
    for expected in &defaults {
        assert!(core.handshake_reply_pending());
        assert_eq!(
            core.tick(Instant::now(), 0),
            Tick::Keepalive { protocol: false },
            "nothing may precede the handshake reply"
        );
        let Some(Effect::Join {
            reply_to: None,
            channel,
            ..
        }) = core.poll()
        else {
            panic!("a default channel is joined first");
        };
        assert_eq!(&channel, expected);
        assert!(core.poll().is_none());
        core.finish(None, subscribed(&channel));
    }
    assert!(matches!(core.poll(), Some(Effect::AnswerHandshake(f)) if f == hello));
    assert!(!core.handshake_reply_pending());
    assert!(matches!(core.poll(), Some(Effect::HubConnected)));
    assert_eq!(reply(&core.poll().unwrap()), Some((id(1), Outcome::Pong)));
    assert_eq!(
        core.tick(Instant::now(), 0),
        Tick::Keepalive { protocol: true }
    );
}

#[test]
fn a_silent_client_and_an_expired_token_close_at_a_tick() {
    let start = Instant::now();
    let mut core = ConnectionCore::new(&settings(), Arc::new(staff()), start);
    let later = start + CLIENT_TIMEOUT + Duration::from_secs(1);
    assert_eq!(
        core.tick(later, 0),
        Tick::Close(CloseCode::HeartbeatTimeout)
    );
    core.heard(later);
    assert_eq!(core.tick(later, 0), Tick::Keepalive { protocol: true });

    let expiring = Identity {
        expires_at: Some(100),
        ..staff()
    };
    let mut core = core_for(expiring.clone());
    assert_eq!(
        core.tick(Instant::now(), 99),
        Tick::Keepalive { protocol: true }
    );
    assert_eq!(
        core.tick(Instant::now(), 100),
        Tick::Close(CloseCode::TokenExpired)
    );
    let mut lenient = settings();
    lenient.close_on_token_expiry = false;
    let mut core = ConnectionCore::new(&lenient, Arc::new(expiring), Instant::now());
    assert_eq!(
        core.tick(Instant::now(), 100),
        Tick::Keepalive { protocol: true }
    );
}

#[test]
fn a_closing_connection_runs_nothing_more_and_closes_once() {
    let mut core = core();
    assert!(core.begin_close());
    assert!(!core.begin_close(), "a close happens once");
    assert!(core.is_closing());
    core.queue_frame([req(1, Request::Ping)], Admission::Within);
    assert!(core.poll().is_none());
}

/// Issue 15 (seed 004): `unsubscribe` by `subscriptionId`, the id the `subscribed` reply gave or
/// the SDK's `{EntityType}:{EntityId}`; an id of nothing subscribed is answered, never a bad
/// frame (the SDK's unmounts must not close the connection with 4400).
#[test]
fn unsubscribe_by_subscription_id_finds_the_subscription_or_answers_not_subscribed() {
    let by_id = |n: i64, id: &str| {
        let subscription_id = id.to_owned();
        req(n, Request::UnsubscribeById { subscription_id })
    };
    let mut core = core();
    let team = ChannelName::parse("notifications:Team:team-123").unwrap();
    let broadcast = ChannelName::parse("tenant:t1:broadcast").unwrap();
    let broadcast_id = {
        core.subs.begin(&team).unwrap();
        core.subs.begin(&broadcast).unwrap()
    };

    let e = frame(&mut core, [by_id(1, "Team:team-123")]);
    assert!(matches!(&e[0], Effect::Left(c) if *c == team));
    let unsubscribed = |c: &ChannelName| Outcome::Unsubscribed {
        channel: c.to_string(),
    };
    assert_eq!(reply(&e[1]), Some((id(1), unsubscribed(&team))));

    let e = frame(&mut core, [by_id(2, &broadcast_id.to_string())]);
    assert!(matches!(&e[0], Effect::Left(c) if *c == broadcast));
    assert_eq!(reply(&e[1]), Some((id(2), unsubscribed(&broadcast))));
    assert!(core.subs.is_empty());

    // Gone, never made, or no id at all: answered, and more of them than the bad-frame limit
    // leave the connection open.
    let ids = ["Team:team-123", "1", "Team:never", "no-such", "a:b:c"];
    let n = ids.len().max(MAX_BAD_FRAMES as usize + 1);
    let requests = (0..n).map(|i| by_id(i as i64, ids[i % ids.len()]));
    let e = frame(&mut core, requests.collect::<Vec<_>>());
    assert_eq!(e.len(), n, "{e:?}");
    for (i, effect) in e.iter().enumerate() {
        assert!(
            matches!(
                reply(effect),
                Some((to, Outcome::Error { code: ErrorCode::NotSubscribed, .. })) if to == id(i as i64)
            ),
            "{effect:?}"
        );
    }
    assert!(!core.is_closing());
}

/// A hub command's "leave every group" runs in its turn: after a join queued before it is done
/// (so that join is left too), and never leaves the channels joined on connect or the
/// connection's own.
#[test]
fn leaving_every_group_waits_for_earlier_joins_and_keeps_the_connect_channels() {
    let ch = |name: &str| ChannelName::parse(name).unwrap();
    let mut core = core();
    let own = ch("connection:c1");
    core.set_own_channel(own.clone());
    let kept: Vec<ChannelName> = policy::default_channels(&staff())
        .into_iter()
        .chain([own])
        .collect();
    for c in kept.iter().chain([&ch("tenant:t1:order:a")]) {
        core.subs.begin(c).unwrap();
        core.subs.activate(c, 0, Arc::from("e"), Vec::new());
    }
    let b = ch("tenant:t1:order:b");
    core.queue_resubscribe(&b, None);
    let joining = drain(&mut core);
    assert!(
        matches!(joining.as_slice(), [Effect::Join { .. }]),
        "{joining:?}"
    );
    core.queue_leave_groups();
    assert!(drain(&mut core).is_empty(), "not before the join is done");
    core.subs.begin(&b).unwrap();
    core.subs.activate(&b, 0, Arc::from("e"), Vec::new());
    core.finish(None, subscribed(&b));
    let mut left: Vec<String> = drain(&mut core)
        .iter()
        .filter_map(|e| match e {
            Effect::Left(c) => Some(c.to_string()),
            _ => None,
        })
        .collect();
    left.sort();
    assert_eq!(left, ["tenant:t1:order:a", "tenant:t1:order:b"]);
    assert!(kept.iter().all(|c| core.subs.contains(c)));
}

/// The tickets of the publishes among `effects`, in order.
fn tickets(effects: &[Effect]) -> Vec<super::PublishTicket> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

fn reply_ids(effects: &[Effect]) -> Vec<ReplyTo> {
    effects.iter().filter_map(reply).map(|(r, _)| r).collect()
}

#[test]
fn publishes_to_different_channels_are_in_flight_together_and_replied_in_request_order() {
    let mut core = core();
    let e = frame(
        &mut core,
        [
            publish(1, "tenant:t1:order:a", "E"),
            publish(2, "tenant:t1:order:b", "E"),
            publish(3, "tenant:t1:order:c", "E"),
        ],
    );
    let t = tickets(&e);
    assert_eq!(t.len(), 3, "all three started before any answer: {e:?}");
    // Answered out of order: each reply waits for the ones before it.
    core.publish_done(t[2], published());
    core.publish_done(t[1], published());
    assert!(
        reply_ids(&drain(&mut core)).is_empty(),
        "1 is not answered yet"
    );
    core.publish_done(t[0], published());
    assert_eq!(reply_ids(&drain(&mut core)), [id(1), id(2), id(3)]);
}

#[test]
fn publishes_to_one_channel_start_together_and_other_requests_wait_for_the_publishes() {
    let mut core = core();
    let e = frame(
        &mut core,
        [
            publish(1, "tenant:t1:order:a", "E"),
            publish(2, "tenant:t1:order:a", "E"),
        ],
    );
    let started = tickets(&e);
    // Both go to the actor, whose lane for the channel keeps their order (`publish_lanes.rs`).
    assert_eq!(started.len(), 2, "both to the same channel start: {e:?}");
    core.publish_done(started[0], published());
    assert_eq!(reply_ids(&drain(&mut core)), [id(1)]);

    // A ping after a publish in flight waits for its reply, and replies after it.
    let e = frame(&mut core, [req(3, Request::Ping)]);
    assert!(
        reply_ids(&e).is_empty(),
        "the ping waits for publish 2: {e:?}"
    );
    core.publish_done(started[1], published());
    assert_eq!(reply_ids(&drain(&mut core)), [id(2), id(3)]);
}

#[test]
fn publishes_in_flight_are_bounded_and_an_invalid_one_is_answered_in_its_turn() {
    let mut core = core();
    let records: Vec<Decoded> = (1..=i64::try_from(MAX_PUBLISHES_IN_FLIGHT).unwrap() + 1)
        .map(|n| publish(n, &format!("tenant:t1:order:o{n}"), "E"))
        .chain([publish(99, "not a channel", "E")])
        .collect();
    let e = frame(&mut core, records);
    let t = tickets(&e);
    assert_eq!(t.len(), MAX_PUBLISHES_IN_FLIGHT, "{e:?}");
    core.publish_done(t[0], published());
    let e = drain(&mut core);
    assert_eq!(reply_ids(&e), [id(1)]);
    let more = tickets(&e);
    assert_eq!(more.len(), 1, "one more started in the freed place");
    // The invalid one is refused at once, but replied after every publish before it.
    for ticket in t[1..].iter().chain(&more) {
        core.publish_done(*ticket, published());
    }
    let last = i64::try_from(MAX_PUBLISHES_IN_FLIGHT).unwrap() + 1;
    let mut expected: Vec<ReplyTo> = (2..=last).map(id).collect();
    expected.push(id(99));
    assert_eq!(reply_ids(&drain(&mut core)), expected);
}
