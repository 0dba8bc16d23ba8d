//! What one publish allocates on the native codec's per-publish path, counted by a counting
//! allocator (a count repeats exactly, unlike a time): decoding the `publish` frame and encoding
//! the `published` reply. Each runs once per publish in the targeted case
//! (`docs/benchmarks.md`, "The targeted case"), so an allocation added here is paid per event.
//!
//! Its own test binary: the counting allocator must not count other tests' work. Counts are per
//! thread, so tests running side by side do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use switchyard_actors::codec::native::NativeCodec;
use switchyard_actors::codec::{
    Decoded, InFrame, OutFrame, Outcome, Request, RequestId, WireCodec,
};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations (and reallocations) `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

const PUBLISH: &str = r#"{"type":"publish","id":7,"data":{"channel":"tenant:acme:broadcast","event":"NewOrder","data":{"orderId":"o1","lines":[{"sku":"a","qty":2}],"total":12.5}}}"#;

/// The request keeps the channel, the event name and the data (one shared copy): four
/// allocations, and serde_json's stack for skipping nested data. Read into a map of fields first,
/// it was eleven.
#[test]
fn decoding_a_publish_allocates_only_what_the_request_keeps() {
    let mut out = Vec::with_capacity(1);
    let ((), n) = allocations(|| NativeCodec.decode(InFrame::Text(PUBLISH), &mut out));
    match &out[..] {
        [Decoded::Request(inbound)] => match &inbound.request {
            Request::Publish {
                channel,
                event,
                data,
            } => {
                assert_eq!(inbound.reply_to, Some(RequestId::Number(7)));
                assert_eq!(channel, "tenant:acme:broadcast");
                assert_eq!(event, "NewOrder");
                assert_eq!(
                    data.get(),
                    r#"{"orderId":"o1","lines":[{"sku":"a","qty":2}],"total":12.5}"#
                );
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(n <= 5, "decoding one publish frame allocated {n} times");
}

/// The reply is written straight into its frame: the buffer and the shared `Bytes` (it was eight
/// with a `json!` map).
#[test]
fn the_published_reply_allocates_its_frame_only() {
    let reply_to = Some(RequestId::Number(7));
    let outcome = Outcome::Published {
        id: Arc::from("01a20822-8c05-71dc-b1d9-7cb75e5e7294"),
        offset: 2,
        epoch: Arc::from("55e551938e4c"),
    };
    let (frame, n) = allocations(|| NativeCodec.encode(&reply_to, outcome));
    let Some(OutFrame::Text(bytes)) = frame else {
        panic!("{frame:?}")
    };
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        r#"{"type":"published","id":7,"data":{"epoch":"55e551938e4c","id":"01a20822-8c05-71dc-b1d9-7cb75e5e7294","offset":2}}"#
    );
    assert!(n <= 2, "one published reply allocated {n} times");
}
