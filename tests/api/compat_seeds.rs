//! The seeds' front-end code as written (`tests/compat/`, only the hub URL and the token source
//! changed), run with the real `@microsoft/signalr` client under Node
//! (`tests/js/compat-driver.mjs`) against real nodes; what the seeds' handlers compute is asserted
//! (issue 15, items 1, 2 and 6): seed 002's tenant toasts, seed 003's chat store (typing, presence,
//! errors, notifications) on one node and with its two users on two nodes, and seed 001's
//! SignalR service, React context, admin order dashboard and customer order tracking, with the
//! admin and the customer on two nodes. The back end chooses the SignalR arguments per publish (REST, the ingest stream) or
//! per hub path (`signalr.default_arguments`).

use std::path::Path;

use serde_json::{json, Value};
use switchyard::settings::{HubTransport, Settings};

use crate::helpers::*;
use crate::hub_client::HubClient;
use crate::redis_server::RedisServer;

/// The hub path seed 003's store connects to.
const CHAT_HUB: &str = "/hubs/chat";
/// A hub path for seed 002's page whose events carry their data unless the publisher chose.
const TENANT_HUB: &str = "/hubs/tenants";
const PETS: &str = "pets";

fn compat_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Every hub path these tests use: seed 001's default (`message`), seed 002's and seed 003's
/// (`data`).
fn seed_hubs(s: &mut Settings) {
    s.signalr.hub_paths = vec![
        "/hubs/notifications".into(),
        TENANT_HUB.into(),
        CHAT_HUB.into(),
    ];
    s.signalr.default_arguments = vec![format!("{TENANT_HUB}=data"), format!("{CHAT_HUB}=data")];
}

/// One seed's front-end code running in its own Node process.
struct Seed {
    driver: HubClient,
    calls: u64,
}

impl Seed {
    /// Runs `file` with the hub at `hub_url` and `token` (seed 003's auth store holds `user`).
    async fn load(file: &str, hub_url: &str, token: &str, user: &str) -> Self {
        let mut driver = HubClient::driver("compat-driver.mjs");
        driver
            .command(
                json!({"cmd": "load", "file": compat_file(file), "hubUrl": hub_url,
                "token": token, "userId": user}),
            )
            .await;
        let loaded = driver
            .wait_for(|v| v["type"] == "loaded" || v["type"] == "error")
            .await;
        assert_eq!(loaded["type"], "loaded", "{loaded}");
        Self { driver, calls: 0 }
    }

    /// Seed 002's page: loaded, and its `connection.start()` resolved.
    async fn tenant_page(app: &TestApp, hub: &str, who: &As) -> Self {
        let mut page = Self::load(
            "seed002-tenant-page.js",
            &app.url(hub),
            &token(who),
            &who.sub,
        )
        .await;
        let started = page
            .driver
            .wait_for(|v| {
                v["type"] == "console"
                    && v["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("SignalR connect"))
            })
            .await;
        assert_eq!(started["text"], "?? SignalR connected", "{started}");
        page
    }

    /// Seed 003's Pinia store for `user`, connected (`connect()` as the app calls it).
    async fn chat_store(app: &TestApp, user: &str) -> Self {
        let who = customer(PETS, user, None);
        let mut store = Self::load(
            "seed003-signalr-store.js",
            &app.url(CHAT_HUB),
            &token(&who),
            user,
        )
        .await;
        store
            .driver
            .command(json!({"cmd": "store", "name": "useSignalRStore"}))
            .await;
        store.driver.wait_for(|v| v["type"] == "loaded").await;
        store.call("connect", json!([])).await;
        let state = store.state().await;
        assert_eq!(state["isConnected"], true, "{state}");
        assert_eq!(state["connectionError"], Value::Null, "{state}");
        store
    }

    /// Awaits `store[f](...args)`; its value.
    async fn call(&mut self, f: &str, args: Value) -> Value {
        self.calls += 1;
        let id = self.calls;
        self.driver
            .command(json!({"cmd": "call", "id": id, "fn": f, "args": args}))
            .await;
        let r = self
            .driver
            .wait_for(|v| (v["type"] == "result" && v["id"] == id) || v["type"] == "error")
            .await;
        assert_eq!(r["type"], "result", "{f}: {r}");
        r["value"].clone()
    }

    /// Calls `f(args)` until it returns `expected` (the store updates when an event arrives).
    async fn until(&mut self, f: &str, args: Value, expected: Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.call(f, args.clone()).await;
            if got == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{f}({args}) stayed {got}, expected {expected}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The state once `pred` holds for it (the store updates when an event arrives).
    async fn state_until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = self.state().await;
            if pred(&state) {
                return state;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {state}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn state(&mut self) -> Value {
        self.calls += 1;
        let id = self.calls;
        self.driver.command(json!({"cmd": "state", "id": id})).await;
        self.driver
            .wait_for(|v| v["type"] == "state" && v["id"] == id)
            .await["value"]
            .clone()
    }

    /// Adds a handler on the store's connection for an event the store itself does not handle.
    async fn listen(&mut self, event: &str) {
        self.driver
            .command(json!({"cmd": "listen", "event": event}))
            .await;
        self.driver
            .wait_for(|v| v["type"] == "listening" && v["event"] == event)
            .await;
    }

    /// The arguments of the next `event` seen by a [`Seed::listen`] handler.
    async fn event(&mut self, name: &str) -> Value {
        self.driver
            .wait_for(|v| v["type"] == "event" && v["name"] == name)
            .await["args"]
            .clone()
    }

    /// The next toast (`toastr`, `toast` or `window.toast`): `(level, text)`.
    async fn toast(&mut self) -> (String, String) {
        let t = self.driver.wait_for(|v| v["type"] == "toast").await;
        (
            t["level"].as_str().unwrap().to_owned(),
            t["text"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// The next `console.error` line the code printed starting with `first` (the client's own
    /// logger prints there too).
    async fn console_error(&mut self, first: &str) -> Value {
        self.driver
            .wait_for(|v| v["type"] == "console" && v["level"] == "error" && v["args"][0] == first)
            .await
    }
}

/// Seed 001's screens as its PWA builds them: the SignalR service (7.1) and React context (7.2)
/// under the real React, with one component (7.3's `Orders` or 7.4's `MyOrders`) rendered inside
/// the provider, connected as `who`; returned once the component's effect subscribed `events`.
async fn seed001_screen(
    app: &TestApp,
    who: &As,
    file: &str,
    component: &str,
    events: &[&str],
) -> Seed {
    let mut driver = HubClient::driver("compat-driver.mjs");
    driver.command(json!({"cmd": "react"})).await;
    let ready = driver
        .wait_for(|v| v["type"] == "loaded" || v["type"] == "error")
        .await;
    assert_eq!(ready["type"], "loaded", "{ready}");
    let files = [
        compat_file("seed001-signalr-service.js"),
        compat_file("seed001-signalr-context.js"),
        compat_file(file),
    ];
    driver
        .command(
            json!({"cmd": "load", "files": files, "baseUrl": app.url(""),
            "token": token(who)}),
        )
        .await;
    let loaded = driver
        .wait_for(|v| v["type"] == "loaded" || v["type"] == "error")
        .await;
    assert_eq!(loaded["type"], "loaded", "{loaded}");
    driver
        .command(
            json!({"cmd": "render", "id": 1, "provider": "SignalRProvider",
            "components": [component]}),
        )
        .await;
    let rendered = driver
        .wait_for(|v| v["type"] == "rendered" || v["type"] == "error")
        .await;
    assert_eq!(rendered["type"], "rendered", "{rendered}");
    driver
        .wait_for(|v| v["type"] == "console" && v["text"] == "SignalR Connected")
        .await;
    let mut screen = Seed { driver, calls: 1 };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        screen.calls += 1;
        let id = screen.calls;
        screen
            .driver
            .command(json!({"cmd": "handlers", "id": id}))
            .await;
        let got = screen
            .driver
            .wait_for(|v| v["type"] == "handlers" && v["id"] == id)
            .await;
        let names = got["value"].as_array().unwrap();
        if events
            .iter()
            .all(|e| names.contains(&json!(e.to_lowercase())))
        {
            return screen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{component} never subscribed {events:?}: {got}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Seed 001's admin dashboard and customer order tracking as written, on two nodes, each event
/// published on the other node: `NewOrder` and `OrderStatusChanged` reach the admin's `Orders`,
/// `OrderStatusUpdate` the customer's `MyOrders`, and their handlers compute what the seed's
/// screens show (issue 15, "seed 001's admin and customer SignalR service").
#[actix_web::test]
async fn seed001_signalr_service_admin_and_customer_screens_work_unchanged_across_nodes() {
    seed001_screens_across_nodes(seed_hubs).await;
}

/// The same where WebSockets cannot pass (a proxy that does not forward upgrades; here the nodes
/// offer the other transports only): the seed's `WebSockets | ServerSentEvents` falls back to
/// Server-Sent Events, and the screens work the same.
#[actix_web::test]
async fn seed001_screens_fall_back_to_server_sent_events_where_websockets_cannot_pass() {
    seed001_screens_across_nodes(|s| {
        seed_hubs(s);
        s.signalr.transports = vec![HubTransport::ServerSentEvents, HubTransport::LongPolling];
    })
    .await;
}

async fn seed001_screens_across_nodes(tweak: impl Fn(&mut Settings)) {
    let (_redis, _db, a, b) = two_chat_nodes_with(tweak).await;
    a.open_session("acme", "s1", json!("T5")).await;
    let mut admin_screen = seed001_screen(
        &a,
        &admin("acme"),
        "seed001-admin-orders.js",
        "Orders",
        &["NewOrder", "OrderStatusChanged"],
    )
    .await;
    let mut customer_screen = seed001_screen(
        &b,
        &customer("acme", "c1", Some("s1")),
        "seed001-customer-my-orders.js",
        "MyOrders",
        &["OrderStatusUpdate"],
    )
    .await;

    // The order as the seed's OrderService hands it to NotifyNewOrder, from the other node.
    let order = json!({"orderId": "9f1c2d3e-0000-4000-8000-000000000002", "sessionId": "s1",
        "tableNumber": "T5", "items": [{"name": "Soup", "quantity": 2}], "totalAmount": 12.5,
        "createdAt": "2026-11-23T12:00:00Z"});
    let svc = token(&service());
    let (status, reply) = b
        .post_json("/api/v1/tenants/acme/orders", Some(&svc), &order)
        .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        admin_screen.toast().await,
        ("info".into(), "New order from Table T5".into())
    );
    let logged = admin_screen
        .driver
        .wait_for(|v| v["type"] == "console" && v["args"][0] == "New order received:")
        .await;
    assert_eq!(
        logged["args"][1]["data"]["order"], order,
        "setOrders(prev => [notification.data.order, ...prev])"
    );

    // Status changes, published on node a: the admin and the customer (on node b) see them.
    let status_path = "/api/v1/tenants/acme/orders/9f1c2d3e-0000-4000-8000-000000000002/status";
    for (status_name, admin_text, customer_text) in [
        (
            "Preparing",
            "Order 9f1c2d3e is now Preparing",
            "👨‍🍳 Your order is being prepared",
        ),
        (
            "Served",
            "Order 9f1c2d3e is now Served",
            "🍽️ Your order is ready!",
        ),
    ] {
        let (status, reply) = a
            .post_json(
                status_path,
                Some(&svc),
                &json!({"status": status_name, "sessionId": "s1", "order": order}),
            )
            .await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(
            admin_screen.toast().await,
            ("success".into(), admin_text.into())
        );
        assert_eq!(
            customer_screen.toast().await,
            ("info".into(), customer_text.into())
        );
    }
}

/// `POST /api/v1/publish` as a back end (Service); the status.
async fn publish(app: &TestApp, body: Value) -> u16 {
    let (status, reply) = app
        .post_json("/api/v1/publish", Some(&token(&service())), &body)
        .await;
    assert!(status == 202 || status == 400, "{status} {reply}");
    status
}

/// Seed 002: `connection.on("TenantCreated", (data) => toastr.success(`Tenant "${data.tenantName}" …`))`.
#[actix_web::test]
async fn seed002_tenant_page_toasts_what_the_back_end_sent_in_each_argument_form() {
    let app = spawn_app_with(seed_hubs).await;
    // The seed's page on the hub every front end shares: its default stays the message.
    let mut page = Seed::tenant_page(&app, "/hubs/notifications", &admin("acme")).await;
    let ch = "tenant:acme:admins";

    // The bare data, chosen per publish.
    let body = json!({"channel": ch, "event": "TenantCreated",
        "data": {"tenantName": "Acme Corp", "tenantKey": "acme"}, "arguments": "data"});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "success".into(),
            r#"Tenant "Acme Corp" created successfully!"#.into()
        )
    );
    page.driver.wait_for(|v| v["type"] == "reload").await;

    let body = json!({"channel": ch, "event": "TenantCreationFailed",
        "data": {"error": "the key is taken"}, "arguments": "data"});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "error".into(),
            "Failed to create tenant: the key is taken".into()
        )
    );

    // An explicit argument list, like SendAsync("TenantUpdated", tenant).
    let body = json!({"channel": ch, "event": "TenantUpdated", "data": {"tenantKey": "acme"},
        "arguments": [{"tenantName": "Acme Inc"}]});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "success".into(),
            r#"Tenant "Acme Inc" updated successfully!"#.into()
        )
    );

    // The wrapped message, still the default here (seed 001's front ends read it): the seed 002
    // handler then finds no tenantName, which is what the report saw.
    let body = json!({"channel": ch, "event": "TenantUpdated", "data": {"tenantName": "X"}});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "success".into(),
            r#"Tenant "undefined" updated successfully!"#.into()
        )
    );
    let body = json!({"channel": ch, "event": "TenantUpdateFailed", "data": {"error": "x"},
        "arguments": "message"});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        ("error".into(), "Failed to update tenant: undefined".into())
    );

    // What is not one of the three forms is refused, and nothing is published.
    for bad in [json!("bare"), json!({"a": 1}), json!(3)] {
        let body = json!({"channel": ch, "event": "TenantUpdated", "data": {}, "arguments": bad});
        assert_eq!(publish(&app, body).await, 400, "{bad}");
    }
}

/// One node, two hub paths with different defaults and no choice by the publisher: seed 002's
/// page (hub default `data`) and seed 001's order dashboard (hub default `message`) each get
/// what they read; seed 001's order body arrives as its `NewOrder` handler reads it (item 6).
#[actix_web::test]
async fn each_hub_path_has_its_default_and_seed001_reads_the_new_order() {
    let app = spawn_app_with(seed_hubs).await;
    let mut page = Seed::tenant_page(&app, TENANT_HUB, &admin("acme")).await;
    let mut orders = Seed::load(
        "seed001-admin-orders.js",
        &app.url("/hubs/notifications"),
        &token(&admin("acme")),
        "",
    )
    .await;
    orders
        .driver
        .command(json!({"cmd": "mount", "id": 1, "component": "Orders"}))
        .await;
    orders.driver.wait_for(|v| v["type"] == "mounted").await;

    let body = json!({"channel": "tenant:acme:admins", "event": "TenantCreated",
        "data": {"tenantName": "Acme Corp"}});
    assert_eq!(publish(&app, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "success".into(),
            r#"Tenant "Acme Corp" created successfully!"#.into()
        )
    );

    // The order as the seed's OrderService hands it to NotifyNewOrder.
    let order = json!({"orderId": "9f1c2d3e-0000-4000-8000-000000000001", "tableNumber": "T5",
        "items": [{"name": "Soup", "quantity": 2}], "totalAmount": 12.5,
        "createdAt": "2026-11-23T12:00:00Z"});
    let (status, reply) = app
        .post_json(
            "/api/v1/tenants/acme/orders",
            Some(&token(&service())),
            &order,
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        orders.toast().await,
        ("info".into(), "New order from Table T5".into())
    );
    let state = orders.state().await;
    assert_eq!(
        state["component"][0],
        json!([order]),
        "setOrders(prev => [notification.data.order, ...prev])"
    );

    // Its status change, as the seed's NotifyOrderStatusChanged sends it.
    let (status, reply) = app
        .post_json(
            "/api/v1/tenants/acme/orders/9f1c2d3e-0000-4000-8000-000000000001/status",
            Some(&token(&service())),
            &json!({"status": "Preparing", "order": order}),
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        orders.toast().await,
        ("success".into(), "Order 9f1c2d3e is now Preparing".into())
    );
}

/// Seed 002's page on one node, drafts appended to the ingest stream by another process: each
/// argument form travels with the event to the node the page is on.
#[actix_web::test]
async fn ingest_drafts_choose_the_arguments_across_nodes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let a = spawn_cluster_node(&redis.url(), &prefix, seed_hubs).await;
    let b = spawn_cluster_node(&redis.url(), &prefix, seed_hubs).await;
    let mut page = Seed::tenant_page(&b, "/hubs/notifications", &admin("acme")).await;
    redis.ingest_group_exists(&prefix).await;
    let drafts = [
        json!({"channel": "tenant:acme:admins", "event": "TenantCreated",
            "data": {"tenantName": "Bare"}, "arguments": "data"}),
        json!({"channel": "tenant:acme:admins", "event": "TenantUpdated",
            "data": {}, "arguments": [{"tenantName": "Listed"}]}),
        json!({"channel": "tenant:acme:admins", "event": "TenantUpdateFailed",
            "data": {"error": "e"}, "arguments": "message"}),
    ];
    for draft in &drafts {
        redis.ingest(&prefix, &draft.to_string()).await;
    }
    // Both nodes consume the ingest stream, so the three drafts may be published in any order
    // (docs/cluster.md): each toast once, in whatever order they came.
    let mut toasts = vec![page.toast().await, page.toast().await, page.toast().await];
    toasts.sort();
    let mut expected: Vec<(String, String)> = vec![
        (
            "success".into(),
            r#"Tenant "Bare" created successfully!"#.into(),
        ),
        (
            "success".into(),
            r#"Tenant "Listed" updated successfully!"#.into(),
        ),
        ("error".into(), "Failed to update tenant: undefined".into()),
    ];
    expected.sort();
    assert_eq!(toasts, expected);
    // The same events from a REST publish on the other node.
    let body = json!({"channel": "tenant:acme:admins", "event": "TenantCreated",
        "data": {"tenantName": "From A"}, "arguments": "data"});
    assert_eq!(publish(&a, body).await, 202);
    assert_eq!(
        page.toast().await,
        (
            "success".into(),
            r#"Tenant "From A" created successfully!"#.into()
        )
    );
}

/// Seed 003's store for alice on `a` and bob on `b` (mallory on `a`): every handler and invoke of
/// the store, and what its getters compute.
async fn seed003_chat(a: &TestApp, b: &TestApp) {
    let mut alice = Seed::chat_store(a, "alice").await;
    let mut bob = Seed::chat_store(b, "bob").await;

    // sendMessage → ReceiveMessage at bob, MessageSent at alice.
    assert_eq!(
        alice.call("sendMessage", json!(["bob", "Hi Bob"])).await,
        true
    );
    let s = bob
        .state_until("bob's store has the message", |s| {
            s["messages"][0]["content"] == "Hi Bob"
        })
        .await;
    assert_eq!(s["messages"][0]["senderId"], "alice");
    let conv = s["messages"][0]["conversationId"]
        .as_str()
        .expect("the message names its conversation")
        .to_owned();
    alice
        .state_until(
            "alice's store has the server's message (MessageSent)",
            |s| {
                s["messages"].as_array().is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m["id"].as_str().is_some_and(|id| !id.is_empty()))
                })
            },
        )
        .await;

    // joinConversation: the joiner receives its own UserJoinedConversation too, positional.
    alice.listen("UserJoinedConversation").await;
    alice.call("joinConversation", json!([conv])).await;
    assert_eq!(
        alice.event("UserJoinedConversation").await,
        json!([conv, "alice"])
    );
    bob.call("joinConversation", json!([conv])).await;
    assert_eq!(
        alice.event("UserJoinedConversation").await,
        json!([conv, "bob"])
    );

    // Typing: UserStartedTyping(conversationId, userId) fills typingUsers.
    alice.call("startTyping", json!([conv])).await;
    bob.until("getTypingUsers", json!([conv]), json!(["alice"]))
        .await;
    let s = bob.state().await;
    assert_eq!(s["typingUsers"], json!({ conv.clone(): ["alice"] }));
    alice.call("stopTyping", json!([conv])).await;
    bob.until("getTypingUsers", json!([conv]), json!([])).await;

    // Presence: UserOnline(userId) / UserOffline(userId) drive isUserOnline.
    alice.listen("UserOffline").await;
    bob.call("disconnect", json!([])).await;
    assert_eq!(alice.event("UserOffline").await, json!(["bob"]));
    let mut bob = Seed::chat_store(b, "bob").await;
    alice
        .until("isUserOnline", json!(["bob"]), json!(true))
        .await;
    bob.call("joinConversation", json!([conv])).await;

    // MessageError(string): the store prints the reason, not [object Object].
    alice.call("sendMessage", json!(["bob", "   "])).await;
    let printed = alice.console_error("Message error:").await;
    assert!(printed["args"][1].is_string(), "{printed}");
    assert!(
        printed["text"]
            .as_str()
            .unwrap()
            .starts_with("Message error: Invalid message content"),
        "{printed}"
    );

    // ConversationError(string) for someone who is not a participant.
    let mut mallory = Seed::chat_store(a, "mallory").await;
    mallory.listen("ConversationError").await;
    mallory.call("joinConversation", json!([conv])).await;
    assert_eq!(
        mallory.event("ConversationError").await,
        json!(["Access denied"])
    );

    // leaveConversation: UserLeftConversation(conversationId, userId) to the others.
    alice.listen("UserLeftConversation").await;
    bob.call("leaveConversation", json!([conv])).await;
    assert_eq!(
        alice.event("UserLeftConversation").await,
        json!([conv, "bob"])
    );

    // ReceiveNotification(notification): a back end's notification, as the store reads it.
    let notification = json!({"id": "n1", "title": "Booking confirmed",
        "message": "Rex is booked for Friday", "isRead": false});
    let body = json!({"channel": "tenant:pets:user:bob", "event": "ReceiveNotification",
        "data": notification, "arguments": "data"});
    assert_eq!(publish(a, body).await, 202);
    assert_eq!(
        bob.toast().await,
        ("info".into(), "Rex is booked for Friday".into())
    );
    let s = bob.state().await;
    assert_eq!(s["notifications"], json!([notification]));

    bob.call("disconnect", json!([])).await;
    alice
        .until("isUserOnline", json!(["bob"]), json!(false))
        .await;
}

#[actix_web::test]
async fn seed003_chat_store_works_unchanged_on_one_node() {
    let app = spawn_app_with(|s| {
        seed_hubs(s);
        s.presence.offline_grace_ms = 300;
    })
    .await;
    seed003_chat(&app, &app).await;
}

#[actix_web::test]
async fn seed003_chat_store_works_unchanged_with_its_users_on_two_nodes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let db = TestDb::postgres().await;
    let node = |s: &mut Settings| {
        cluster_settings(s, &redis.url(), &prefix);
        seed_hubs(s);
        // No hub defaults: what the stores read is what each publisher chose.
        s.signalr.default_arguments.clear();
    };
    let a = spawn_app_with_db(&db, node).await;
    let b = spawn_app_with_db(&db, node).await;
    seed003_chat(&a, &b).await;
}
