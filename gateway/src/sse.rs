//! Following a Redis stream as server-sent events: each entry becomes an event whose `id:` is
//! the stream id, so that `Last-Event-ID` resumes exactly after it. The connection is the
//! caller's own (a blocking read must not stall a shared one).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures_util::Stream;
use grid_shared::wire::connection::Conn;
use redis::streams::{StreamId, StreamReadReply};

/// Reads `key` after `start`, mapping each entry with `to_event` (entries it drops are skipped).
/// The stream ends when Redis fails; the client reconnects with `Last-Event-ID` and loses nothing.
pub fn follow<F>(conn: Conn, key: String, start: String, to_event: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn(&StreamId) -> Option<Event> + Send + 'static,
{
    futures_util::stream::unfold(
        (conn, start, VecDeque::new(), to_event),
        move |(mut conn, mut last, mut buffer, to_event)| {
            let key = key.clone();
            async move {
                loop {
                    if let Some(event) = buffer.pop_front() {
                        return Some((Ok(event), (conn, last, buffer, to_event)));
                    }
                    let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(500)
                        .arg("BLOCK")
                        .arg(10_000)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(&last)
                        .query_async(&mut conn)
                        .await;
                    let reply = match read {
                        Ok(reply) => reply,
                        Err(error) => {
                            tracing::warn!(%error, "stream read failed; closing the event stream");
                            return None;
                        }
                    };
                    for entry in reply.into_iter().flat_map(|reply| reply.keys).flat_map(|stream| stream.ids) {
                        last = entry.id.clone();
                        buffer.extend(to_event(&entry));
                    }
                }
            }
        },
    )
}
