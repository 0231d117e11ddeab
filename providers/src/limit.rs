//! A bound on every answer read from an upstream (Vault, the Kubernetes API,
//! AWS). A CSI SecretProviderClass can point `vaultAddress` at any server:
//! without a bound, one 1 GiB answer costs gigabytes of memory (the body,
//! then the parsed JSON), and a few at once kill the process. Answers are
//! refused early on a `Content-Length` over the bound, and otherwise read
//! in chunks that stop one byte past it, so a chunked or lying body costs
//! at most the bound plus one chunk.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use zeroize::Zeroizing;

/// The largest answer accepted from an upstream: the CSI driver's 4 MiB
/// gRPC budget for a whole Mount response, so no single secret can be
/// larger than what could ever be delivered.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The largest single value taken out of an answer (a Vault key's value):
/// what Kubernetes allows for a whole Secret and Vault's integrated storage
/// for one entry, and the `fileRef` default. A 4 MiB answer could
/// otherwise hold one 4 MiB value, which no Mount response or agent reply
/// around it could carry.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The answer was over the bound (carried inside library errors so that
/// the provider can tell it from a network failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the answer is over the {limit}-byte limit")]
pub(crate) struct Exceeded {
    pub(crate) limit: usize,
}

/// Whether an error or one of its sources is an [`Exceeded`].
pub(crate) fn exceeded_in(err: &(dyn std::error::Error + 'static)) -> Option<Exceeded> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(x) = e.downcast_ref::<Exceeded>() {
            return Some(*x);
        }
        cur = e.source();
    }
    None
}

/// Refuses a declared length over the bound before any byte is read.
pub(crate) fn check_declared(len: Option<u64>, limit: usize) -> Result<(), Exceeded> {
    match len {
        Some(n) if n > limit as u64 => Err(Exceeded { limit }),
        _ => Ok(()),
    }
}

/// Collects chunks into zeroizing memory, up to the bound.
pub(crate) struct Collector {
    buf: Zeroizing<Vec<u8>>,
    limit: usize,
}

impl Collector {
    pub(crate) fn new(limit: usize) -> Self {
        Collector {
            buf: Zeroizing::new(Vec::new()),
            limit,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), Exceeded> {
        if self.buf.len() + chunk.len() > self.limit {
            return Err(Exceeded { limit: self.limit });
        }
        // Grow through `reserve` on a zeroizing Vec would leave the old
        // buffer unwiped on reallocation; copy into a fresh one instead.
        if self.buf.capacity() < self.buf.len() + chunk.len() {
            let want = (self.buf.len() + chunk.len())
                .max(self.buf.capacity() * 2)
                .min(self.limit);
            let mut bigger = Zeroizing::new(Vec::with_capacity(want));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

/// Why a bounded read failed: the bound, or the transport underneath.
pub(crate) enum ReadError<E> {
    Exceeded(Exceeded),
    Transport(E),
}

/// Reads a reqwest response body within `limit`.
pub(crate) async fn read_reqwest(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, ReadError<reqwest::Error>> {
    check_declared(resp.content_length(), limit).map_err(ReadError::Exceeded)?;
    let mut out = Collector::new(limit);
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        out.push(&chunk).map_err(ReadError::Exceeded)?;
    }
    Ok(out.finish())
}

/// Reads any `http_body` body within `limit`.
pub(crate) async fn read_body<B: Body + Unpin>(
    mut body: B,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, ReadError<B::Error>>
where
    B::Data: AsRef<[u8]>,
{
    check_declared(body.size_hint().exact(), limit).map_err(ReadError::Exceeded)?;
    let mut out = Collector::new(limit);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.map_err(ReadError::Transport)?.into_data() {
            out.push(data.as_ref()).map_err(ReadError::Exceeded)?;
        }
    }
    Ok(out.finish())
}

/// A body that fails with [`Exceeded`] once more than `limit` bytes went
/// through: for libraries (the AWS SDK) that read the body themselves.
pub(crate) struct Limited<B> {
    inner: B,
    seen: usize,
    limit: usize,
}

impl<B> Limited<B> {
    pub(crate) fn new(inner: B, limit: usize) -> Self {
        Limited {
            inner,
            seen: 0,
            limit,
        }
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len());
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(Exceeded { limit: this.limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_stops_past_the_limit() {
        let mut c = Collector::new(10);
        c.push(b"12345").unwrap();
        c.push(b"67890").unwrap();
        assert_eq!(c.push(b"x"), Err(Exceeded { limit: 10 }));
        assert_eq!(&c.finish()[..], b"1234567890");
    }

    #[test]
    fn declared_length() {
        assert!(check_declared(Some(11), 10).is_err());
        assert!(check_declared(Some(10), 10).is_ok());
        assert!(check_declared(None, 10).is_ok());
    }
}
