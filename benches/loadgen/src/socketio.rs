//! The Socket.IO 5 protocol over Engine.IO 4 on a plain WebSocket, as much as the benchmark's
//! Socket.IO target needs: the URL, the Engine.IO open (`0{…}`) and Socket.IO connect (`40`,
//! answered `40{…}` or refused `44{…}`), events (`42[name,…]`, with an ack id `42<id>[…]`), acks
//! (`43<id>[…]`) and Engine.IO's heartbeat (the server's ping `2`, answered `3`).

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::ws_publisher::Reply;

/// Engine.IO ping (sent by the server in v4) and the pong that answers it.
pub const PING: &str = "2";
pub const PONG: &str = "3";
/// Engine.IO message (4) + Socket.IO EVENT (2): an event, optionally followed by an ack id.
pub const EVENT_PREFIX: &str = "42";
/// Engine.IO message (4) + Socket.IO ACK (3).
const ACK_PREFIX: &str = "43";
/// Engine.IO OPEN.
const OPEN_PREFIX: &str = "0";
/// Socket.IO CONNECT (accepted) and CONNECT_ERROR (refused) on the main namespace.
const CONNECTED_PREFIX: &str = "40";
const CONNECT_ERROR_PREFIX: &str = "44";
/// The Socket.IO endpoint, WebSocket transport straight away (no long-polling first).
const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

type Ws = WebSocketStream<TcpStream>;

/// Why a Socket.IO connection could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// The socket failed or closed.
    Connect(String),
    /// The server answered with a refusal.
    Refused(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Connect(m) | SetupError::Refused(m) => f.write_str(m),
        }
    }
}

impl From<SetupError> for String {
    fn from(e: SetupError) -> Self {
        e.to_string()
    }
}

/// The WebSocket URL of the Socket.IO endpoint at `authority`.
pub fn url(authority: &str) -> String {
    format!("ws://{authority}{PATH}")
}

/// The next text frame, answering pings on the way.
pub async fn next_text(ws: &mut Ws) -> Result<String, SetupError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == PING => {
                ws.send(Message::text(PONG))
                    .await
                    .map_err(|e| SetupError::Connect(format!("send pong: {e}")))?;
            }
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(SetupError::Refused(format!(
                    "closed during set-up: {frame:?}"
                )))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::Connect(format!("read during set-up: {e}"))),
            None => return Err(SetupError::Connect("closed during set-up".to_owned())),
        }
    }
}

/// Waits for Engine.IO's open packet, connects to the main namespace with `{"token":…}` as the
/// auth payload, and waits for the server's answer.
pub async fn connect(ws: &mut Ws, token: &str) -> Result<(), SetupError> {
    loop {
        let text = next_text(ws).await?;
        if text.starts_with(CONNECT_ERROR_PREFIX) {
            return Err(SetupError::Refused(format!(
                "socket.io connect refused: {text}"
            )));
        }
        if text.starts_with(CONNECTED_PREFIX) {
            return Ok(());
        }
        if text.starts_with(OPEN_PREFIX) {
            let auth = serde_json::json!({ "token": token });
            ws.send(Message::text(format!("{CONNECTED_PREFIX}{auth}")))
                .await
                .map_err(|e| SetupError::Connect(format!("send connect: {e}")))?;
        }
    }
}

/// `43<id>[…]`: the ack id and the JSON array after it.
fn ack(text: &str) -> Option<(u64, &str)> {
    let rest = text.strip_prefix(ACK_PREFIX)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// Reads an ack as the publisher's [`Reply`]: `[{"error":{"code","message"}}]` is a refusal,
/// anything else an acknowledgement; a frame that is no ack is `Other`.
pub fn parse_ack(text: &str) -> Reply {
    let Some((id, args)) = ack(text) else {
        return Reply::Other;
    };
    let first = serde_json::from_str::<Vec<Value>>(args)
        .ok()
        .and_then(|a| a.into_iter().next());
    match first.as_ref().and_then(|v| v.get("error")) {
        None => Reply::Published(id),
        Some(error) => {
            let field = |key: &str| {
                error
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Reply::Refused {
                id,
                code: field("code"),
                message: field("message"),
            }
        }
    }
}

/// Emits `subscribe` with `channel` (ack id 1) and waits for its ack; deliveries that arrive
/// before it go to `on_delivery`.
pub async fn subscribe(
    ws: &mut Ws,
    channel: &str,
    mut on_delivery: impl FnMut(&str),
) -> Result<(), SetupError> {
    const SUBSCRIBE_ACK_ID: u64 = 1;
    let name = serde_json::to_string(channel).unwrap_or_default();
    ws.send(Message::text(format!(
        r#"{EVENT_PREFIX}{SUBSCRIBE_ACK_ID}["subscribe",{name}]"#
    )))
    .await
    .map_err(|e| SetupError::Connect(format!("send subscribe: {e}")))?;
    loop {
        let text = next_text(ws).await?;
        if text.starts_with(EVENT_PREFIX) {
            on_delivery(&text);
            continue;
        }
        match parse_ack(&text) {
            Reply::Published(SUBSCRIBE_ACK_ID) => return Ok(()),
            Reply::Refused { code, message, .. } => {
                return Err(SetupError::Refused(format!(
                    "subscribe refused: {code}: {message}"
                )))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_acks_and_refusals() {
        assert_eq!(
            parse_ack(r#"437[{"id":"e-1","offset":1,"epoch":"e"}]"#),
            Reply::Published(7)
        );
        assert_eq!(
            parse_ack(r#"4312[{"error":{"code":"bad_request","message":"no channel"}}]"#),
            Reply::Refused {
                id: 12,
                code: "bad_request".to_owned(),
                message: "no channel".to_owned()
            }
        );
        assert_eq!(parse_ack(r#"42["E",{"seq":1}]"#), Reply::Other);
        assert_eq!(parse_ack("2"), Reply::Other);
        assert_eq!(
            parse_ack("43[]"),
            Reply::Other,
            "an ack without an id matches nothing"
        );
    }
}
