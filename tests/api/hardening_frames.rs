//! Issue 12, finding 6: "Malformed WebSocket frames are dropped silently." A text message with
//! invalid UTF-8 (in one frame or across fragments) closes with 1007, a frame with a reserved bit
//! set with 1002; each with a reason, counted in `switchyard_bad_frames_total`, never touching
//! another connection. Frames are built by hand (raw TCP) since a WebSocket client library will not
//! send them.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A client frame: `first` is the byte with FIN, RSV1-3 and the opcode; the payload is masked as
/// RFC 6455 requires of clients.
fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;

/// Opens `/ws` over raw TCP as `who`, sends `bytes`, and reads until the server closes the TCP
/// connection; returns the close frame's code and reason (`None`: no close frame at all).
async fn close_after(app: &TestApp, who: &As, bytes: &[u8]) -> Option<(u16, String)> {
    let mut stream = raw_ws_upgrade(app, &token(who)).await;
    stream.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    // A reset after the close frame is fine: what was read before it counts.
    let _ = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    close_frame_in(&buf)
}

fn bad_frames(code: &str) -> String {
    format!("switchyard_bad_frames_total{{code=\"{code}\"}}")
}

#[actix_web::test]
async fn malformed_websocket_frames_close_with_a_code_and_are_counted() {
    let app = spawn_app().await;
    let mut bystander = app.connect(&customer("acme", "c2", None)).await;
    bystander.subscribed("tenant:acme:broadcast").await;
    let who = customer("acme", "c1", None);

    // One text frame with invalid UTF-8.
    let single = masked_frame(FIN | TEXT, b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}");
    let (code, reason) = close_after(&app, &who, &single)
        .await
        .expect("a close frame, not a bare TCP close");
    assert_eq!(code, 1007, "{reason}");
    assert!(!reason.is_empty());
    assert_eq!(app.metric(&bad_frames("invalid_utf8")).await, 1.0);

    // The same split across fragments: the same close, the same count.
    let mut split = masked_frame(TEXT, b"{\"x\":\"\xe2\x82");
    split.extend(masked_frame(FIN | CONTINUATION, b"\x28\"}"));
    let (code, reason) = close_after(&app, &who, &split)
        .await
        .expect("a close frame");
    assert_eq!(code, 1007, "{reason}");
    assert_eq!(app.metric(&bad_frames("invalid_utf8")).await, 2.0);

    // A reserved bit set (no extension was negotiated).
    let rsv = masked_frame(FIN | RSV1 | TEXT, b"{\"type\":\"ping\"}");
    let (code, reason) = close_after(&app, &who, &rsv).await.expect("a close frame");
    assert_eq!(code, 1002, "{reason}");
    assert!(!reason.is_empty());
    assert_eq!(app.metric(&bad_frames("reserved_bits")).await, 1.0);

    for reason in ["invalid_payload", "protocol_error"] {
        let sample = format!("switchyard_disconnects_total{{reason=\"{reason}\"}}");
        assert!(app.metric(&sample).await >= 1.0, "{sample}");
    }
    // The bystander saw nothing of it.
    bystander.ping().await;
}
