//! The Azure SignalR Service–compatible data-plane REST API (`src/routes/azure.rs`, version
//! 2022-06-01): every route, against real nodes. Sends and membership run on two cluster nodes
//! over a real Redis, with the real `@microsoft/signalr` client connected to the node that did
//! not receive the REST call, and assert what its handlers received (target and arguments).

use actix_web::http::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::hub_client::{HubClient, HubOptions};
use crate::redis_cluster_server::RedisCluster;
use crate::redis_server::RedisServer;

/// A back end of tenant `acme` (a Service token carrying `tenantKey`).
fn acme_backend() -> As {
    As {
        role: "Service",
        tenant: Some("acme"),
        sub: "backend".into(),
        session: None,
    }
}

const V: &str = "api-version=2022-06-01";

/// One REST call: status, the `x-ms-error-code` header, the body as JSON (`null` when empty).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("http request");
    let code = res
        .headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.body().await.expect("http body");
    (
        res.status().as_u16(),
        code,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `HEAD {path}`'s status.
async fn head(app: &TestApp, path: &str, token: &str) -> u16 {
    call(app, Method::HEAD, path, Some(token), None).await.0
}

/// Polls `HEAD {path}` until it answers `status` (membership changes reach the connection's
/// node asynchronously, like any event).
async fn head_becomes(app: &TestApp, path: &str, token: &str, status: u16) {
    eventually(&format!("HEAD {path} -> {status}"), || async {
        (head(app, path, token).await == status).then_some(())
    })
    .await;
}

async fn start_hub(app: &TestApp, who: &As, events: Vec<&'static str>) -> HubClient {
    let client = HubClient::start(
        app,
        &token(who),
        HubOptions {
            events,
            ..HubOptions::default()
        },
    )
    .await
    .expect("hub client starts");
    assert!(
        client.connection_id.is_some(),
        "negotiate gave a connectionId"
    );
    client
}

/// Sends `Marker` to the connection and waits for it: everything sent to the client before it
/// (by the same node, on any channel) has been handled by then.
async fn marker(app: &TestApp, svc: &str, client: &mut HubClient, n: u64) {
    let id = client.connection_id.clone().unwrap();
    let (status, _, body) = call(
        app,
        Method::POST,
        &format!("/api/hubs/notifications/connections/{id}/:send?{V}"),
        Some(svc),
        Some(json!({"target": "Marker", "arguments": [n]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(client.event_args("Marker").await, json!([n]));
}

#[actix_web::test]
async fn sends_reach_a_hub_client_on_another_node_with_exactly_the_arguments() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    let mut bob = start_hub(
        &b,
        &customer("acme", "bob", None),
        vec!["HubWide", "ToUser", "ToConnection", "ToGroup", "Marker"],
    )
    .await;
    let id = bob.connection_id.clone().unwrap();

    // The hub: every hub connection of the token's tenant (tenant:acme:broadcast).
    let (status, _, body) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/:send?{V}"),
        Some(&svc),
        Some(json!({"target": "HubWide", "arguments": ["o-1", 2, {"nested": [true, null]}]})),
    )
    .await;
    assert_eq!((status, &body), (202, &Value::Null));
    assert_eq!(
        bob.event_args("HubWide").await,
        json!(["o-1", 2, {"nested": [true, null]}])
    );

    // A user (tenant:acme:user:bob); the Management SDK's PascalCase body, no api-version.
    let (status, _, body) = call(
        &a,
        Method::POST,
        "/api/hubs/Notifications/users/bob/:send",
        Some(&svc),
        Some(json!({"Target": "ToUser", "Arguments": ["c1", "bob"]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(bob.event_args("ToUser").await, json!(["c1", "bob"]));

    // One connection, by the connectionId its client was given; no arguments is none.
    let (status, _, body) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/connections/{id}/:send?{V}"),
        Some(&svc),
        Some(json!({"target": "ToConnection"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(bob.event_args("ToConnection").await, json!([]));

    // A group (a channel) the connection joins through the API; the name URL-escaped as the
    // SDK writes it.
    let group = "tenant%3Aacme%3Aorder%3Ao-7";
    let member = format!("/api/hubs/notifications/groups/{group}/connections/{id}?{V}");
    let group_head = format!("/api/hubs/notifications/groups/{group}?{V}");
    assert_eq!(head(&a, &group_head, &svc).await, 404);
    let (status, code, body) = call(&a, Method::PUT, &member, Some(&svc), None).await;
    assert_eq!((status, code), (200, None), "{body}");
    head_becomes(&a, &group_head, &svc, 200).await;
    let (status, _, _) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/groups/{group}/:send?{V}"),
        Some(&svc),
        Some(json!({"target": "ToGroup", "arguments": ["ready"]})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(bob.event_args("ToGroup").await, json!(["ready"]));

    // Removed: later sends to the group no longer reach it.
    let (status, _, _) = call(&a, Method::DELETE, &member, Some(&svc), None).await;
    assert_eq!(status, 200);
    head_becomes(&a, &group_head, &svc, 404).await;
    let (status, _, _) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/groups/{group}/:send?{V}"),
        Some(&svc),
        Some(json!({"target": "ToGroup", "arguments": ["gone"]})),
    )
    .await;
    assert_eq!(status, 202);
    marker(&a, &svc, &mut bob, 1).await;
    assert!(
        !bob.backlog_contains(|v| v["name"] == "ToGroup"),
        "a removed connection got the group's event"
    );
    assert_eq!(
        a.metric("switchyard_published_total{source=\"azure\"}")
            .await,
        8.0,
        "seven sends and one command, each through the one publish path"
    );
}

#[actix_web::test]
async fn existence_checks_and_close_work_across_nodes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    let mut bob = start_hub(&b, &customer("acme", "bob", None), vec![]).await;
    let id = bob.connection_id.clone().unwrap();
    let conn = format!("/api/hubs/notifications/connections/{id}");

    assert_eq!(head(&a, &format!("{conn}?{V}"), &svc).await, 200);
    assert_eq!(head(&a, &conn, &svc).await, 200, "api-version is optional");
    let (status, code, _) = call(
        &a,
        Method::HEAD,
        "/api/hubs/notifications/connections/0123456789abcdef0123456789abcdef",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(code.as_deref(), Some("Warning.Connection.NotExisted"));
    assert_eq!(
        head(&a, &format!("/api/hubs/notifications/users/bob?{V}"), &svc).await,
        200
    );
    let (status, code, _) = call(
        &a,
        Method::HEAD,
        "/api/hubs/notifications/users/nobody",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(
        (status, code.as_deref()),
        (404, Some("Warning.User.NotExisted"))
    );
    // Every hub connection of the tenant is in the hub's broadcast channel.
    assert_eq!(
        head(
            &a,
            "/api/hubs/notifications/groups/tenant:acme:broadcast",
            &svc
        )
        .await,
        200
    );

    // Close: the client sees its connection closed; then it no longer exists.
    let (status, _, body) = call(
        &a,
        Method::DELETE,
        &format!("{conn}?{V}&reason=maintenance"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let closed = bob.wait_for(|v| v["type"] == "closed").await;
    assert_eq!(closed["error"], Value::Null, "a clean close: {closed}");
    head_becomes(&a, &conn, &svc, 404).await;
    head_becomes(&a, "/api/hubs/notifications/users/bob", &svc, 404).await;
    let (status, code, _) = call(&a, Method::DELETE, &conn, Some(&svc), None).await;
    assert_eq!(
        (status, code.as_deref()),
        (404, Some("Warning.Connection.NotExisted"))
    );
}

/// On a Redis Cluster nodes subscribe per partition with sharded pub/sub, which `PUBSUB NUMSUB`
/// does not see: the existence checks read the nodes' listener marks instead.
#[actix_web::test]
async fn existence_checks_see_other_nodes_connections_on_a_redis_cluster() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = crate::redis_cluster::node(&rc, &prefix, |_| {}).await;
    let b = crate::redis_cluster::node(&rc, &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    let bob = start_hub(&a, &customer("acme", "bob", None), vec![]).await;
    let id = bob.connection_id.clone().unwrap();
    let conn = format!("/api/hubs/notifications/connections/{id}?{V}");
    let user = format!("/api/hubs/notifications/users/bob?{V}");
    let group = "tenant%3Aacme%3Aorder%3Ao-7";
    let group_head = format!("/api/hubs/notifications/groups/{group}?{V}");
    // Asked on node b, which has no local subscriber to any of them; as soon as the client is
    // connected, as on one Redis.
    assert_eq!(head(&b, &conn, &svc).await, 200);
    assert_eq!(head(&b, &user, &svc).await, 200);
    assert_eq!(head(&b, &group_head, &svc).await, 404);
    let member = format!("/api/hubs/notifications/groups/{group}/connections/{id}?{V}");
    let (status, _, body) = call(&b, Method::PUT, &member, Some(&svc), None).await;
    assert_eq!(status, 200, "{body}");
    head_becomes(&b, &group_head, &svc, 200).await;

    bob.stop().await;
    head_becomes(&b, &conn, &svc, 404).await;
    head_becomes(&b, &user, &svc, 404).await;
    head_becomes(&b, &group_head, &svc, 404).await;
}

/// Starts a node process with `env`, where a customer subscribes to `channel`; returns once node
/// `a`'s group check sees the channel (200). The process and the subscriber.
async fn listening_process_node(
    a: &TestApp,
    env: &[(&str, String)],
    channel: &str,
) -> (tokio::process::Child, WsClient) {
    let (b, port) = process_node(env).await;
    let url = format!(
        "ws://127.0.0.1:{port}/ws?access_token={}",
        token(&customer("acme", "u1", None))
    );
    let mut on_b = WsClient::open(url).await.unwrap();
    on_b.subscribed(channel).await;
    head_becomes(a, &group_head(channel), &token(&acme_backend()), 200).await;
    (b, on_b)
}

fn group_head(channel: &str) -> String {
    format!("/api/hubs/notifications/groups/{channel}?{V}")
}

/// How many nodes marked `channel` as listened to (`SCARD`: 0 for a set that is gone; `None` is
/// a failed redis-cli, never taken for a count).
async fn marks_of(rc: &RedisCluster, prefix: &str, channel: &str) -> Option<String> {
    let marks = crate::redis_cluster::keys(prefix)
        .listeners(&switchyard_actors::channel::ChannelName::parse(channel).unwrap());
    crate::redis_cluster_server::cli(rc.ports[0], &["SCARD", &marks]).await
}

/// A node killed without unmarking its channels: they stop existing once its heartbeat is older
/// than the node TTL, and the node that finds it dead removes its listener mark.
#[actix_web::test]
async fn a_sigkilled_nodes_channels_stop_existing_on_a_redis_cluster() {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    let a = crate::redis_cluster::node(&rc, &prefix, |_| {}).await;
    // Test settings: node TTL 2 s.
    let env = crate::redis_cluster::process_env(
        &rc,
        &prefix,
        &[
            ("SWITCHYARD__PRESENCE__NODE_TTL_SECS", "2"),
            ("SWITCHYARD__PRESENCE__HEARTBEAT_INTERVAL_MS", "200"),
        ],
    );
    let channel = "tenant:acme:order:o-9";
    let (mut b, _on_b) = listening_process_node(&a, &env, channel).await;
    assert_eq!(
        marks_of(&rc, &prefix, channel).await.as_deref(),
        Some("1"),
        "node b marked the channel"
    );

    b.start_kill().unwrap(); // SIGKILL
    b.wait().await.unwrap();
    let svc = token(&acme_backend());
    head_becomes(&a, &group_head(channel), &svc, 404).await;
    // The node that finds b dead removes b's marks (they would pile up otherwise).
    eventually("node b's listener mark to be removed", || async {
        (marks_of(&rc, &prefix, channel).await.as_deref() == Some("0")).then_some(())
    })
    .await;
}

/// A node SIGKILLed and started again with the same `node.id` before any node found it dead (a
/// fixed id, as a StatefulSet gives; here a node TTL longer than the test) drops its previous
/// run's listener marks when it starts: the channel its previous run listened to stops existing
/// for the other node's checks. Before, the restarted node, alive under the same id, kept the
/// stale mark counting and the check answered 200 for a channel nobody listens to.
#[actix_web::test]
async fn a_node_restarted_with_the_same_id_drops_its_previous_runs_marks_and_presence_on_a_redis_cluster(
) {
    let rc = RedisCluster::start().await;
    let prefix = unique_prefix();
    // Nobody is found dead within the test: only the restart itself can drop the marks.
    let a = crate::redis_cluster::node(&rc, &prefix, |s| s.presence.node_ttl_secs = 600).await;
    let id = format!("fixed-{}", uuid::Uuid::new_v4().simple());
    let env = crate::redis_cluster::process_env(
        &rc,
        &prefix,
        &[
            ("SWITCHYARD__NODE__ID", &id),
            ("SWITCHYARD__PRESENCE__NODE_TTL_SECS", "600"),
        ],
    );
    let channel = "tenant:acme:order:o-restart";
    let (mut b, _on_b) = listening_process_node(&a, &env, channel).await;
    let admin_token = token(&admin("acme"));
    let connections = || async {
        let (_, p) = a
            .get("/api/v1/tenants/acme/presence", Some(&admin_token))
            .await;
        p["connections"].as_u64()
    };
    assert_eq!(connections().await, Some(1), "u1 on node b is present");

    b.start_kill().unwrap(); // SIGKILL: no unmarking
    b.wait().await.unwrap();
    let (_b_again, port) = process_node(&env).await;
    let svc = token(&acme_backend());
    head_becomes(&a, &group_head(channel), &svc, 404).await;
    eventually("the previous run's mark to be gone", || async {
        (marks_of(&rc, &prefix, channel).await.as_deref() == Some("0")).then_some(())
    })
    .await;
    // Its presence too: the restarted node's heartbeats under the same id kept the previous
    // run's connection present for good.
    eventually(
        "the previous run's connection to leave presence",
        || async { (connections().await == Some(0)).then_some(()) },
    )
    .await;
    // What this run listens to counts again: the clearing happened before it marked anything.
    let url = format!(
        "ws://127.0.0.1:{port}/ws?access_token={}",
        token(&customer("acme", "u2", None))
    );
    let mut again = WsClient::open(url).await.unwrap();
    again.subscribed(channel).await;
    head_becomes(&a, &group_head(channel), &svc, 200).await;
}

/// Starts a node process with `env` (the variables as `process_env` gives them).
async fn process_node(env: &[(&str, String)]) -> (tokio::process::Child, u16) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_node_process(&env).await
}

#[actix_web::test]
async fn remove_from_all_groups_keeps_the_channels_joined_on_connect() {
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let mut bob = start_hub(&app, &customer("acme", "bob", None), vec!["HubWide"]).await;
    let id = bob.connection_id.clone().unwrap();
    let groups = ["tenant:acme:order:o1", "tenant:acme:order:o2"];
    for g in groups {
        let path = format!("/api/hubs/notifications/groups/{g}/connections/{id}");
        assert_eq!(
            call(&app, Method::PUT, &path, Some(&svc), None).await.0,
            200
        );
        head_becomes(
            &app,
            &format!("/api/hubs/notifications/groups/{g}"),
            &svc,
            200,
        )
        .await;
    }
    let (status, _, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/hubs/notifications/connections/{id}/groups?{V}"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for g in groups {
        head_becomes(
            &app,
            &format!("/api/hubs/notifications/groups/{g}"),
            &svc,
            404,
        )
        .await;
    }
    // Its own channel, the hub's and the user's stay.
    assert_eq!(
        head(
            &app,
            &format!("/api/hubs/notifications/connections/{id}"),
            &svc
        )
        .await,
        200
    );
    let (status, _, _) = call(
        &app,
        Method::POST,
        "/api/hubs/notifications/:send",
        Some(&svc),
        Some(json!({"target": "HubWide", "arguments": [1]})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(bob.event_args("HubWide").await, json!([1]));
}

#[actix_web::test]
async fn a_group_join_follows_the_connections_own_channel_rules() {
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let mut bob = start_hub(&app, &customer("acme", "bob", None), vec!["Marker"]).await;
    let id = bob.connection_id.clone().unwrap();
    let refused_before = app
        .metric("switchyard_subscription_errors_total{code=\"forbidden\"}")
        .await;
    // A customer's connection may not be in the tenant's admins channel, whoever adds it.
    let path = format!("/api/hubs/notifications/groups/tenant:acme:admins/connections/{id}");
    assert_eq!(
        call(&app, Method::PUT, &path, Some(&svc), None).await.0,
        200
    );
    app.wait_metric(
        "switchyard_subscription_errors_total{code=\"forbidden\"}",
        refused_before + 1.0,
    )
    .await;
    marker(&app, &svc, &mut bob, 1).await;
    assert_eq!(
        head(
            &app,
            "/api/hubs/notifications/groups/tenant:acme:admins",
            &svc
        )
        .await,
        404
    );
}

/// A refused call: method, path, token, body, status, problem `code`.
type Case<'a> = (Method, String, Option<&'a str>, Option<Value>, u16, &'a str);

#[actix_web::test]
async fn refusals_are_problem_json_and_counted() {
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let bob = start_hub(&app, &customer("acme", "bob", None), vec![]).await;
    let id = bob.connection_id.clone().unwrap();
    let send = |target: &str| json!({"target": target, "arguments": [1]});
    let forbidden_before = app
        .metric("switchyard_http_errors_total{status=\"403\"}")
        .await;

    // (method, path, token, body, status, problem code)
    let admin = token(&admin("acme"));
    let tenantless = token(&service());
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/hubs/notifications/:send".into(), None, Some(send("X")), 401, "token_missing"),
        (Method::POST, "/api/hubs/notifications/:send".into(), Some(&admin), Some(send("X")), 403, "forbidden"),
        (Method::PUT, format!("/api/hubs/notifications/groups/tenant:acme:order:1/connections/{id}"), Some(&admin), None, 403, "forbidden"),
        (Method::POST, "/api/hubs/notifications/groups/tenant:globex:broadcast/:send".into(), Some(&svc), Some(send("X")), 403, "forbidden"),
        (Method::POST, "/api/hubs/notifications/groups/global:broadcast/:send".into(), Some(&svc), Some(send("X")), 403, "forbidden"),
        (Method::PUT, format!("/api/hubs/notifications/groups/tenant:globex:order:1/connections/{id}"), Some(&svc), None, 403, "forbidden"),
        (Method::POST, format!("/api/hubs/notifications/groups/connection:{id}/:send"), Some(&svc), Some(send("X")), 403, "forbidden"),
        (Method::POST, "/api/hubs/notifications/:send".into(), Some(&tenantless), Some(send("X")), 400, "bad_request"),
        (Method::POST, "/api/hubs/nope/:send".into(), Some(&svc), Some(send("X")), 404, "not_found"),
        (Method::POST, "/api/hubs/notifications/:send?api-version=2021-10-01".into(), Some(&svc), Some(send("X")), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/:send?excluded=abc".into(), Some(&svc), Some(send("X")), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/:send?application=app".into(), Some(&svc), Some(send("X")), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/:send".into(), Some(&svc), Some(send("bad target")), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/:send".into(), Some(&svc), Some(json!({"target": "X", "arguments": {"a": 1}})), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/groups/not-a-channel/:send".into(), Some(&svc), Some(send("X")), 400, "bad_request"),
        (Method::POST, "/api/hubs/notifications/users/b:ob/:send".into(), Some(&svc), Some(send("X")), 400, "bad_request"),
        (Method::PUT, "/api/hubs/notifications/groups/tenant:acme:order:1/connections/0123456789abcdef0123456789abcdef".into(), Some(&svc), None, 404, "not_found"),
    ];
    for (method, path, tok, body, status, code) in cases {
        let (got, _, problem) = call(&app, method.clone(), &path, tok, body).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(problem["code"], code, "{method} {path}: {problem}");
        assert_eq!(problem["status"], status, "{problem}");
    }
    // The SDK tells "no such connection" from other 404s by this header.
    let (_, code, _) = call(
        &app,
        Method::PUT,
        "/api/hubs/notifications/groups/tenant:acme:order:1/connections/0123456789abcdef0123456789abcdef",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(code.as_deref(), Some("Error.Connection.NotExisted"));
    app.wait_metric(
        "switchyard_http_errors_total{status=\"403\"}",
        forbidden_before + 6.0,
    )
    .await;
    // Nobody may join a connection's channel by asking, not even Service.
    let mut ws = app.connect(&service()).await;
    let refused = ws.subscribe(&format!("connection:{id}")).await;
    assert_eq!(refused["type"], "subscription_error", "{refused}");
    assert_eq!(refused["data"]["code"], "forbidden", "{refused}");
}

/// Waits until the client reports its connection closed; returns the close's error (null when clean).
async fn closed(client: &mut HubClient) -> Value {
    client.wait_for(|v| v["type"] == "closed").await["error"].clone()
}

#[actix_web::test]
async fn close_connections_of_a_group_a_user_and_the_hub_across_nodes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    let mut in_group = start_hub(&b, &customer("acme", "bob", None), vec![]).await;
    let mut carol = start_hub(&b, &customer("acme", "carol", None), vec!["Marker"]).await;
    let mut kept = start_hub(&b, &customer("acme", "dave", None), vec!["Marker"]).await;
    let group = "tenant:acme:order:g1";
    let id = in_group.connection_id.clone().unwrap();
    let path = format!("/api/hubs/notifications/groups/{group}/connections/{id}");
    assert_eq!(call(&a, Method::PUT, &path, Some(&svc), None).await.0, 200);
    head_becomes(
        &a,
        &format!("/api/hubs/notifications/groups/{group}"),
        &svc,
        200,
    )
    .await;

    // A group: its connections close, others stay.
    let (status, _, body) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/groups/{group}/:closeConnections?{V}&reason=done"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!((status, &body), (204, &Value::Null));
    assert_eq!(closed(&mut in_group).await, Value::Null);

    // A command in a channel's history is not carried out again by a client that replays it.
    let mut late = start_hub(&b, &customer("acme", "erin", None), vec!["Marker"]).await;
    let first = late.invoke("Subscribe", json!([group])).await.unwrap();
    late.invoke("Unsubscribe", json!([group])).await.unwrap();
    let since = json!({"offset": 0, "epoch": first["epoch"]});
    let replayed = late
        .invoke("Subscribe", json!([group, since]))
        .await
        .unwrap();
    assert_eq!(replayed["recovered"], true, "{replayed}");
    marker(&a, &svc, &mut late, 1).await;
    assert!(!late.backlog_contains(|v| v["type"] == "closed"));

    // A user: every connection of that user.
    let (status, _, _) = call(
        &a,
        Method::POST,
        "/api/hubs/notifications/users/carol/:closeConnections",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(closed(&mut carol).await, Value::Null);

    // The hub: every connection of the tenant but the excluded ones.
    let kept_id = kept.connection_id.clone().unwrap();
    let (status, _, _) = call(
        &a,
        Method::POST,
        &format!("/api/hubs/notifications/:closeConnections?excluded={kept_id}&excluded=other"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(closed(&mut late).await, Value::Null);
    marker(&a, &svc, &mut kept, 2).await;
    assert!(!kept.backlog_contains(|v| v["type"] == "closed"));
}

#[actix_web::test]
async fn a_users_connections_on_every_node_join_and_leave_groups() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    let bob = customer("acme", "bob", None);
    let mut on_a = start_hub(&a, &bob, vec!["ToGroup"]).await;
    let mut on_b = start_hub(&b, &bob, vec!["ToGroup"]).await;
    let group = "tenant:acme:order:u1";
    let group_head = format!("/api/hubs/notifications/groups/{group}");
    let member = format!("/api/hubs/notifications/users/bob/groups/{group}");
    let subs_a = a.metric("switchyard_subscriptions").await;
    let subs_b = b.metric("switchyard_subscriptions").await;

    let (status, _, body) = call(
        &a,
        Method::PUT,
        &format!("{member}?{V}&ttl=0"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Both connections joined, each on its own node; then a group send reaches each.
    a.wait_metric("switchyard_subscriptions", subs_a + 1.0)
        .await;
    b.wait_metric("switchyard_subscriptions", subs_b + 1.0)
        .await;
    head_becomes(&a, &group_head, &svc, 200).await;
    let send = format!("/api/hubs/notifications/groups/{group}/:send");
    for round in 0..2 {
        let (status, _, _) = call(
            &a,
            Method::POST,
            &send,
            Some(&svc),
            Some(json!({"target": "ToGroup", "arguments": [round]})),
        )
        .await;
        assert_eq!(status, 202);
    }
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(client.event_args("ToGroup").await, json!([0]));
        assert_eq!(client.event_args("ToGroup").await, json!([1]));
    }

    let (status, _, _) = call(&a, Method::DELETE, &member, Some(&svc), None).await;
    assert_eq!(status, 204);
    head_becomes(&a, &group_head, &svc, 404).await;

    assert_eq!(
        call(&a, Method::PUT, &member, Some(&svc), None).await.0,
        200
    );
    head_becomes(&a, &group_head, &svc, 200).await;
    let (status, _, _) = call(
        &b,
        Method::DELETE,
        "/api/hubs/notifications/users/bob/groups",
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 204);
    head_becomes(&a, &group_head, &svc, 404).await;

    // Not supported, and said so: 501, never a 404 that reads as "not in the group".
    let (status, _, problem) = call(&a, Method::HEAD, &member, Some(&svc), None).await;
    assert_eq!(status, 501, "{problem}");
    let (status, _, problem) = call(
        &a,
        Method::PUT,
        &format!("{member}?ttl=60"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!((status, &problem["code"]), (400, &json!("bad_request")));
}

/// A token as Azure's Management SDK signs it: HS256 with the connection string's `AccessKey`,
/// `aud` the request URL (with `api-version`), `nameid` the server's name.
fn access_key_token(key: &str, aud: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("-1337592512".into());
    jsonwebtoken::encode(
        &header,
        &json!({"aud": aud, "nameid": "web-1", "exp": now + 3600, "iat": now, "nbf": now}),
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn azure_access_key_tokens_act_as_a_service_of_the_configured_tenant() {
    const KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg=";
    let app = spawn_app_with(|s| {
        s.azure.access_key = secrecy::SecretString::from(KEY.to_owned());
        s.azure.tenant_key = "acme".into();
    })
    .await;
    let mut bob = start_hub(&app, &customer("acme", "bob", None), vec!["ToUser"]).await;
    let path = "/api/hubs/notifications/users/bob/:send";
    // The audience as the SDK writes it: its endpoint, which a proxy may have rewritten.
    let aud = format!("https://switchyard.example.com{path}?{V}");
    let body = json!({"Target": "ToUser", "Arguments": ["from azure"]});
    let (status, _, problem) = call(
        &app,
        Method::POST,
        &format!("{path}?{V}"),
        Some(&access_key_token(KEY, &aud)),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 202, "{problem}");
    assert_eq!(bob.event_args("ToUser").await, json!(["from azure"]));

    // The tenant is the configured one: another tenant's group is refused.
    let other = "/api/hubs/notifications/groups/tenant:globex:broadcast/:send";
    let (status, _, _) = call(
        &app,
        Method::POST,
        other,
        Some(&access_key_token(KEY, &format!("https://h{other}"))),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403);

    // A token for another URL, or signed with another key, is not a caller.
    let wrong_audience = app
        .metric("switchyard_auth_failures_total{reason=\"wrong_audience\"}")
        .await;
    let bad_signature = app
        .metric("switchyard_auth_failures_total{reason=\"bad_signature\"}")
        .await;
    for token in [
        access_key_token(
            KEY,
            "https://switchyard.example.com/api/hubs/notifications/:send",
        ),
        access_key_token("another key", &aud),
    ] {
        let (status, _, problem) = call(
            &app,
            Method::POST,
            &format!("{path}?{V}"),
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!((status, &problem["code"]), (401, &json!("token_invalid")));
    }
    app.wait_metric(
        "switchyard_auth_failures_total{reason=\"wrong_audience\"}",
        wrong_audience + 1.0,
    )
    .await;
    app.wait_metric(
        "switchyard_auth_failures_total{reason=\"bad_signature\"}",
        bad_signature + 1.0,
    )
    .await;
    // Switchyard's own routes do not take access-key tokens.
    let (status, _) = app
        .post_json(
            "/api/v1/publish",
            Some(&access_key_token(KEY, &aud)),
            &json!({"channel": "tenant:acme:broadcast", "event": "X", "data": {}}),
        )
        .await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn messagepack_clients_get_the_same_arguments_and_native_clients_never_see_commands() {
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let mut packed = HubClient::start(
        &app,
        &token(&customer("acme", "bob", None)),
        HubOptions {
            messagepack: true,
            events: vec!["ToGroup"],
            ..HubOptions::default()
        },
    )
    .await
    .unwrap();
    let id = packed.connection_id.clone().unwrap();
    let group = "tenant:acme:order:mp";
    let mut native = app.connect(&customer("acme", "carol", None)).await;
    assert_eq!(native.subscribe(group).await["type"], "subscribed");

    let before = app.metric("switchyard_subscriptions").await;
    let member = format!("/api/hubs/notifications/groups/{group}/connections/{id}");
    assert_eq!(
        call(&app, Method::PUT, &member, Some(&svc), None).await.0,
        200
    );
    // The hub connection joined too (the native client alone makes the group exist).
    app.wait_metric("switchyard_subscriptions", before + 1.0)
        .await;
    let (status, _, _) = call(
        &app,
        Method::POST,
        &format!("/api/hubs/notifications/groups/{group}/:send"),
        Some(&svc),
        Some(json!({"target": "ToGroup", "arguments": ["o-1", 2.5, [1, {"a": null}]]})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        packed.event_args("ToGroup").await,
        json!(["o-1", 2.5, [1, {"a": null}]])
    );
    // The native client gets the send as a notification whose data is the argument list...
    let n = native.recv_event().await;
    assert_eq!(n["type"], "notification", "{n}");
    assert_eq!(n["data"]["event"], "ToGroup");
    assert_eq!(n["data"]["data"], json!(["o-1", 2.5, [1, {"a": null}]]));
    // ...and not the group's close command, which closes the hub connection only.
    let (status, _, _) = call(
        &app,
        Method::POST,
        &format!("/api/hubs/notifications/groups/{group}/:closeConnections"),
        Some(&svc),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(closed(&mut packed).await, Value::Null);
    app.publish(&service(), group, "After", json!(1)).await;
    let next = native.recv_event().await;
    assert_eq!(
        next["data"]["event"], "After",
        "the command was not written: {next}"
    );
}

#[actix_web::test]
async fn a_resumed_connection_keeps_its_connection_id_and_what_was_sent_to_it_meanwhile() {
    use crate::tcp_proxy::Proxy;
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let proxy = Proxy::start(app.port).await;
    let url = format!("http://127.0.0.1:{}/hubs/notifications", proxy.port);
    let mut bob = HubClient::start_url(
        &url,
        &token(&customer("acme", "bob", None)),
        HubOptions {
            stateful_reconnect: true,
            reconnect: true,
            events: vec!["ToConnection"],
            ..HubOptions::default()
        },
    )
    .await
    .unwrap();
    let id = bob.connection_id.clone().unwrap();
    let send = format!("/api/hubs/notifications/connections/{id}/:send");
    let to = |n: u64| Some(json!({"target": "ToConnection", "arguments": [n]}));
    assert_eq!(
        call(&app, Method::POST, &send, Some(&svc), to(1)).await.0,
        202
    );
    assert_eq!(bob.event_args("ToConnection").await, json!([1]));
    // The socket drops; the connection is parked under the same connectionId.
    proxy.hold(true);
    proxy.sever();
    assert_eq!(
        call(&app, Method::POST, &send, Some(&svc), to(2)).await.0,
        202
    );
    proxy.hold(false);
    assert_eq!(bob.event_args("ToConnection").await, json!([2]));
    assert_eq!(
        call(&app, Method::POST, &send, Some(&svc), to(3)).await.0,
        202
    );
    assert_eq!(bob.event_args("ToConnection").await, json!([3]));
    assert!(!bob.backlog_contains(|v| v["type"] == "reconnecting"));
}

#[actix_web::test]
async fn membership_commands_sent_back_to_back_end_in_the_state_the_last_one_says() {
    let app = spawn_app().await;
    let svc = token(&acme_backend());
    let mut bob = start_hub(&app, &customer("acme", "bob", None), vec!["Marker"]).await;
    let id = bob.connection_id.clone().unwrap();
    let member = |g: &str| format!("/api/hubs/notifications/groups/{g}/connections/{id}");
    let exists = |g: &str| format!("/api/hubs/notifications/groups/{g}");
    let (g, h) = ("tenant:acme:order:g", "tenant:acme:order:h");
    // Each step is answered before the next is sent; none waits for the connection.
    let steps = [
        (Method::PUT, member(g)),
        (Method::DELETE, member(g)),
        (Method::PUT, member(g)),
        (Method::PUT, member(h)),
        (Method::DELETE, member(h)),
        (Method::PUT, member(h)),
    ];
    for (method, path) in steps {
        assert_eq!(call(&app, method, &path, Some(&svc), None).await.0, 200);
    }
    // The commands arrived (the marker follows them on the same channel), then a hub method
    // invoked now runs after the joins and leaves they queued.
    marker(&app, &svc, &mut bob, 1).await;
    assert_eq!(bob.invoke("Ping", json!([])).await, Ok(json!(true)));
    settles_to(&app, &svc, &exists(g), 200).await;
    settles_to(&app, &svc, &exists(h), 200).await;

    let all = format!("/api/hubs/notifications/connections/{id}/groups");
    assert_eq!(
        call(&app, Method::DELETE, &all, Some(&svc), None).await.0,
        200
    );
    assert_eq!(
        call(&app, Method::PUT, &member(g), Some(&svc), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, Method::DELETE, &all, Some(&svc), None).await.0,
        200
    );
    marker(&app, &svc, &mut bob, 2).await;
    assert_eq!(bob.invoke("Ping", json!([])).await, Ok(json!(true)));
    settles_to(&app, &svc, &exists(g), 404).await;
    settles_to(&app, &svc, &exists(h), 404).await;
}

/// Waits until `HEAD path` answers `status`, then checks it stays so: the state membership
/// commands end in, not one passing on the way (a wrong final state times out).
async fn settles_to(app: &TestApp, svc: &str, path: &str, status: u16) {
    head_becomes(app, path, svc, status).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(head(app, path, svc).await, status, "{path} stays {status}");
}

/// The Azure-compatible API addresses a connection by its `connectionId` whatever transport it
/// uses: a Server-Sent Events and a Long Polling client on another node get a send to their
/// connection, and one to a group the API put them in.
#[actix_web::test]
async fn connections_over_server_sent_events_and_long_polling_are_addressed_too() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, |_| {}).await;
    let svc = token(&acme_backend());
    for transport in ["ServerSentEvents", "LongPolling"] {
        let mut client = HubClient::start(
            &b,
            &token(&customer("acme", "bob", None)),
            HubOptions {
                transport: Some(transport),
                events: vec!["ToConnection", "ToGroup"],
                ..HubOptions::default()
            },
        )
        .await
        .expect("hub client starts");
        let id = client.connection_id.clone().expect("a connectionId");
        let (status, _, body) = call(
            &a,
            Method::POST,
            &format!("/api/hubs/notifications/connections/{id}/:send?{V}"),
            Some(&svc),
            Some(json!({"target": "ToConnection", "arguments": [transport]})),
        )
        .await;
        assert_eq!(status, 202, "{transport}: {body}");
        assert_eq!(client.event_args("ToConnection").await, json!([transport]));

        // A group of its own per transport: with one group, the first transport's leave could
        // still be on its way to Redis when the second's join was checked, so the check saw the
        // first's subscription and the send went out before the second's (1 run in 6-8 lost
        // `ToGroup`, before this session's changes too).
        let group = format!("tenant%3Aacme%3Aorder%3Ao-9-{transport}");
        let member = format!("/api/hubs/notifications/groups/{group}/connections/{id}?{V}");
        let (status, _, body) = call(&a, Method::PUT, &member, Some(&svc), None).await;
        assert_eq!(status, 200, "{transport}: {body}");
        eventually("the group to have the connection", || async {
            let head_path = format!("/api/hubs/notifications/groups/{group}?{V}");
            (head(&a, &head_path, &svc).await == 200).then_some(())
        })
        .await;
        let (status, _, body) = call(
            &a,
            Method::POST,
            &format!("/api/hubs/notifications/groups/{group}/:send?{V}"),
            Some(&svc),
            Some(json!({"target": "ToGroup", "arguments": [1]})),
        )
        .await;
        assert_eq!(status, 202, "{transport}: {body}");
        assert_eq!(client.event_args("ToGroup").await, json!([1]));
        let (status, _, _) = call(&a, Method::DELETE, &member, Some(&svc), None).await;
        assert_eq!(status, 200);
        client.stop().await;
    }
}
