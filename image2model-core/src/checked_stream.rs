//! Checking a byte stream while something else consumes it.
//!
//! Upload validation and the GLB check both need the same thing: look at each
//! chunk as it passes to a store, abort the store on the first rejection (by
//! turning it into an `io::Error` that wraps the rejection), and tell the
//! verdict afterwards. [`checked`] does that for any [`StreamCheck`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::ports::ByteStream;

/// A check fed chunk by chunk.
pub trait StreamCheck: Send + 'static {
    /// What an accepted stream yields.
    type Output: Clone + Send + 'static;
    /// Why a stream is rejected.
    type Error: std::error::Error + Clone + Send + Sync + 'static;

    /// Checks the next chunk.
    ///
    /// # Errors
    /// The rejection; no further chunk is fed after one.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Self::Error>;

    /// Checks what needs the whole stream.
    ///
    /// # Errors
    /// The rejection.
    fn finish(self) -> Result<Self::Output, Self::Error>;
}

type Slot<C> = Arc<Mutex<Option<Result<<C as StreamCheck>::Output, <C as StreamCheck>::Error>>>>;

/// The verdict of a stream wrapped by [`checked`].
pub struct Verdict<C: StreamCheck>(Slot<C>);

impl<C: StreamCheck> Clone for Verdict<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: StreamCheck> fmt::Debug for Verdict<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.0.lock().expect("verdict lock") {
            None => "pending",
            Some(Ok(_)) => "accepted",
            Some(Err(_)) => "rejected",
        };
        f.debug_tuple("Verdict").field(&state).finish()
    }
}

impl<C: StreamCheck> Verdict<C> {
    /// `None` while the stream has not ended, or when its source failed
    /// (rather than the check).
    #[must_use]
    pub fn get(&self) -> Option<Result<C::Output, C::Error>> {
        self.0.lock().expect("verdict lock").clone()
    }
}

struct Checked<C: StreamCheck> {
    inner: ByteStream,
    check: Option<C>,
    verdict: Slot<C>,
}

impl<C: StreamCheck> Checked<C> {
    fn reject(&mut self, error: C::Error) -> io::Error {
        self.check = None;
        *self.verdict.lock().expect("verdict lock") = Some(Err(error.clone()));
        io::Error::other(error)
    }
}

impl<C: StreamCheck + Unpin> Stream for Checked<C> {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(check) = this.check.as_mut() else {
            return Poll::Ready(None);
        };
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => match check.feed(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(e) => Poll::Ready(Some(Err(this.reject(e)))),
            },
            Poll::Ready(Some(Err(e))) => {
                this.check = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => match this.check.take().expect("checked above").finish() {
                Ok(output) => {
                    *this.verdict.lock().expect("verdict lock") = Some(Ok(output));
                    Poll::Ready(None)
                }
                Err(e) => Poll::Ready(Some(Err(this.reject(e)))),
            },
        }
    }
}

/// Wraps `body` so that `check` sees every chunk: the first rejection becomes
/// an `io::Error` wrapping the check's error (so a store writing the stream
/// aborts and keeps nothing), and the returned [`Verdict`] tells the outcome.
#[must_use]
pub fn checked<C: StreamCheck + Unpin>(body: ByteStream, check: C) -> (ByteStream, Verdict<C>) {
    let verdict: Slot<C> = Arc::new(Mutex::new(None));
    let stream = Checked {
        inner: body,
        check: Some(check),
        verdict: verdict.clone(),
    };
    (Box::pin(stream), Verdict(verdict))
}
