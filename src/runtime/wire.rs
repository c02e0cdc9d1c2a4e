//! Messages that leave in one TCP segment. Spin's sockets, inbound and outbound,
//! keep Nagle's algorithm on (it never sets `TCP_NODELAY`), and a `wasi:http`
//! body is written by a task of its own in the component. When the host sends
//! the headers before that task has offered the body, the body follows as a
//! second small segment, which Nagle holds until the peer acknowledges the
//! first; a peer that has not yet seen a whole message delays that ACK (40 ms
//! on Linux). Measured on Spin 4.0.2: a third of the calls to Ximilar paid it.
//!
//! For requests, letting the writer offer the body before `send` makes the split
//! rare (measured on Spin: 4 % of sequential calls instead of 30 %), though not
//! impossible: the host still copies the body on its own schedule, and CPU
//! contention can let the headers go first. Answers cannot be helped from
//! inside: the host receives the response before the component can run again,
//! and about half the answers on a keep-alive connection leave as headers,
//! then body 40 ms later (docs/operations.md).

use std::future::poll_fn;
use std::task::Poll;

/// Lets the component's other ready tasks run once, so the body writer a
/// request just spawned offers its bytes before the host sends. Call it
/// between converting a request (which spawns the writer) and `send`.
pub async fn yield_to_body_writer() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
