//! The HTTP side of [`StreamedAnswer`]: an actix body that asks the answer for its next
//! chunk each time the connection can take one, so a large answer goes out as it is
//! written and is never whole in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;

use crate::federation::streamed::StreamedAnswer;

/// A `200` JSON answer written chunk by chunk.
pub(crate) fn json_streamed(answer: StreamedAnswer) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(StreamedBody(answer))
}

struct StreamedBody(StreamedAnswer);

impl MessageBody for StreamedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    /// Each chunk is read from the database right here: a few hundred short reads, most
    /// from sled's cache, small enough not to hold the worker back.
    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let chunk = match self.get_mut().0.next_chunk() {
            Ok(chunk) => chunk.map(|text| Ok(Bytes::from(text))),
            Err(err) => {
                // The status is sent already: the answer is cut, and the reason logged.
                tracing::warn!("a streamed federation answer failed midway: {err}");
                Some(Err(err.to_string().into()))
            }
        };
        Poll::Ready(chunk)
    }
}
