//! Accepting the `:authority` the driver sends.
//!
//! The driver dials the socket *path* as its gRPC target
//! (`grpc.Dial("/var/run/secrets-store-csi-providers/kernelseal.sock",
//! WithContextDialer(…))`), and grpc-go then sends that path as the HTTP/2
//! `:authority`; grpcio sends it percent-encoded. Neither is a valid
//! authority, and h2 (under tonic) resets such a stream with
//! PROTOCOL_ERROR, so the driver could never talk to us. h2 has no switch
//! for this (hyperium/h2#487 is unmerged), so this adapter sits between the
//! socket and h2: it passes every frame through, except header blocks from
//! the client, which it decodes (HPACK, keeping the client's dynamic table
//! in step) and re-encodes as literals without indexing — h2's decoder
//! table then stays empty and consistent — with an invalid `:authority`
//! replaced by `localhost`, as grpc-go does for `unix:` targets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// h2's default SETTINGS_MAX_FRAME_SIZE: our re-encoded blocks are split
/// into CONTINUATION frames at this size.
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted from a client (gRPC headers are small).
const MAX_BLOCK: usize = 64 * 1024;
/// Largest decoded header list (RFC 7541 §4.1 sizes: name + value + 32 per
/// field). HPACK lets one byte name a 4 KiB table entry, so a 64 KiB block
/// can decode to hundreds of MiB; the list is measured as it is decoded and
/// refused past this, before anything is copied.
const MAX_HEADER_LIST: usize = 64 * 1024;

/// A connection whose client header blocks are normalised; see the module.
pub struct AuthorityFix<S> {
    inner: S,
    decoder: fluke_hpack::Decoder<'static>,
    /// Raw bytes read from the client, not yet processed.
    input: Vec<u8>,
    /// Processed bytes for h2.
    output: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    /// Payload bytes of a pass-through frame still to copy.
    passthrough_left: usize,
    /// A header block being collected: stream id, END_STREAM, fragments.
    pending: Option<(u32, bool, Vec<u8>)>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        // h2 advertises the default 4096-byte table; a client may not use more.
        decoder.set_max_allowed_table_size(4096);
        AuthorityFix {
            inner,
            decoder,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            passthrough_left: 0,
            pending: None,
            eof: false,
        }
    }

    /// Moves as much of `input` to `output` as complete frames allow.
    fn process(&mut self) -> io::Result<()> {
        let mut pos = 0;
        loop {
            let avail = &self.input[pos..];
            if avail.is_empty() {
                break;
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(avail.len());
                self.output.extend_from_slice(&avail[..n]);
                self.preface_left -= n;
                pos += n;
                continue;
            }
            if self.passthrough_left > 0 {
                let n = self.passthrough_left.min(avail.len());
                self.output.extend_from_slice(&avail[..n]);
                self.passthrough_left -= n;
                pos += n;
                continue;
            }
            if avail.len() < FRAME_HEADER {
                break;
            }
            let len = u32::from_be_bytes([0, avail[0], avail[1], avail[2]]) as usize;
            let kind = avail[3];
            let flags = avail[4];
            let stream = u32::from_be_bytes([avail[5], avail[6], avail[7], avail[8]]) & 0x7fff_ffff;
            if kind != HEADERS && kind != CONTINUATION {
                if self.pending.is_some() {
                    return Err(bad("a frame interrupted a header block"));
                }
                self.output.extend_from_slice(&avail[..FRAME_HEADER]);
                self.passthrough_left = len;
                pos += FRAME_HEADER;
                continue;
            }
            if len > MAX_BLOCK {
                return Err(bad("header frame too large"));
            }
            if avail.len() < FRAME_HEADER + len {
                break;
            }
            let payload = &avail[FRAME_HEADER..FRAME_HEADER + len];
            pos += FRAME_HEADER + len;
            let fragment = if kind == HEADERS {
                if self.pending.is_some() {
                    return Err(bad("HEADERS inside a header block"));
                }
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *p.first().ok_or_else(|| bad("short padded HEADERS"))? as usize;
                    p = &p[1..];
                }
                if flags & PRIORITY != 0 {
                    // Priority is advisory (and deprecated); dropped.
                    p = p.get(5..).ok_or_else(|| bad("short HEADERS priority"))?;
                }
                if pad > p.len() {
                    return Err(bad("HEADERS padding longer than the frame"));
                }
                self.pending = Some((stream, flags & END_STREAM != 0, Vec::new()));
                &p[..p.len() - pad]
            } else {
                match &self.pending {
                    Some((s, _, _)) if *s == stream => payload,
                    _ => return Err(bad("CONTINUATION without its HEADERS")),
                }
            };
            if let Some((_, _, block)) = self.pending.as_mut() {
                if block.len() + fragment.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                block.extend_from_slice(fragment);
            }
            if flags & END_HEADERS != 0
                && let Some((stream, end_stream, block)) = self.pending.take()
            {
                let encoded = self.reencode(&block)?;
                write_headers(&mut self.output, stream, end_stream, &encoded);
            }
        }
        self.input.drain(..pos);
        Ok(())
    }

    fn reencode(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let decoder = &mut self.decoder;
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut list_size = 0usize;
        // Fields past the bound are still decoded (the dynamic table must
        // stay in step until the connection closes) but not copied.
        let mut reencode_field = |name: std::borrow::Cow<[u8]>, value: std::borrow::Cow<[u8]>| {
            list_size = list_size.saturating_add(name.len() + value.len() + 32);
            if list_size > MAX_HEADER_LIST {
                return;
            }
            let value: &[u8] = if name.as_ref() == b":authority"
                && http::uri::Authority::try_from(value.as_ref()).is_err()
            {
                b"localhost"
            } else {
                &value
            };
            // Literal header field without indexing, new name (RFC 7541 §6.2.2).
            out.push(0x00);
            string(&mut out, &name);
            string(&mut out, value);
        };
        // fluke-hpack unwraps on some truncated inputs; a malformed block
        // must close the connection, not the process.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.decode_with_cb(block, &mut reencode_field)
        }))
        .map_err(|_| bad("malformed header block"))?
        .map_err(|e| bad(&format!("header block: {e:?}")))?;
        if list_size > MAX_HEADER_LIST {
            return Err(bad(&format!(
                "header list of {list_size} bytes decoded, over the {MAX_HEADER_LIST}-byte limit"
            )));
        }
        Ok(out)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

/// An HPACK string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, mut n: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A HEADERS frame, plus CONTINUATION frames when the block is large.
fn write_headers(out: &mut Vec<u8>, stream: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        frame(
            out,
            HEADERS,
            END_HEADERS | if end_stream { END_STREAM } else { 0 },
            stream,
            &[],
        );
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let kind = if first {
            if end_stream {
                flags |= END_STREAM;
            }
            HEADERS
        } else {
            CONTINUATION
        };
        frame(out, kind, flags, stream, chunk);
        first = false;
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.output.len() {
                let n = (this.output.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        this.eof = true;
                        continue;
                    }
                    this.input.extend_from_slice(got);
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let mut v = Vec::new();
        integer(&mut v, 10, 7, 0);
        assert_eq!(v, [10]);
        v.clear();
        integer(&mut v, 1337, 5, 0);
        assert_eq!(v, [31, 154, 10]);
    }

    /// One dynamic-table entry of 4000 bytes, then 60,000 one-byte
    /// references to it: a 64 KB block that decodes to 240 MB.
    #[test]
    fn a_header_block_that_decodes_past_the_list_limit_is_refused() {
        let mut block = vec![0x40];
        string(&mut block, b"x-big");
        string(&mut block, &[b'a'; 4000]);
        block.extend(std::iter::repeat_n(0x80 | 62, 60_000));
        assert!(block.len() <= MAX_BLOCK);
        let mut f = AuthorityFix::new(tokio::io::empty());
        f.preface_left = 0;
        frame(&mut f.input, HEADERS, END_HEADERS, 1, &block);
        let err = f.process().expect_err("refused");
        assert!(
            err.to_string().contains("over the 65536-byte limit"),
            "{err}"
        );
        assert!(
            f.output.len() < MAX_HEADER_LIST,
            "{} bytes passed on",
            f.output.len()
        );
    }

    #[test]
    fn a_header_list_within_the_limit_passes_with_the_authority_fixed() {
        let mut block = Vec::new();
        for (name, value) in [
            (&b":method"[..], &b"POST"[..]),
            (
                b":authority",
                b"/var/run/secrets-store-csi-providers/kernelseal.sock",
            ),
            (b"x-pad", &[b'p'; 30_000]),
        ] {
            block.push(0x00);
            string(&mut block, name);
            string(&mut block, value);
        }
        let mut f = AuthorityFix::new(tokio::io::empty());
        f.preface_left = 0;
        frame(&mut f.input, HEADERS, END_HEADERS, 1, &block);
        f.process().expect("accepted");
        let out = &f.output;
        assert!(out.windows(9).any(|w| w == b"localhost"));
        assert!(!out.windows(8).any(|w| w == b"/var/run"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = AuthorityFix::new(tokio::io::empty());
        f.preface_left = 0;
        // HEADERS, END_HEADERS, a truncated size update.
        f.input = vec![0, 0, 1, HEADERS, END_HEADERS, 0, 0, 0, 1, 0x3f];
        assert!(f.process().is_err());
        let mut f = AuthorityFix::new(tokio::io::empty());
        f.preface_left = 0;
        f.input = vec![0, 0, 2, CONTINUATION, END_HEADERS, 0, 0, 0, 1, 0, 0];
        assert!(f.process().is_err());
    }
}
