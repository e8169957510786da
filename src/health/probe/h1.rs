//! The HTTP/1.1 of a probe: the response head parsed by httparse (hyper's
//! own parser), the body framed by its length or its chunks (httparse's
//! chunk-size parser) and read only as far as the probe needs.
//!
//! Why not hyper's client connection, which probes used before: a probe is
//! one small request and a verdict, on a connection kept from probe to
//! probe. hyper builds its dispatcher, its channels and an 8 KiB read buffer
//! for every request on a connection it did not keep, and keeping its
//! connections would keep those buffers for every idle endpoint. With
//! connections kept, that machinery and its allocations were two thirds of
//! a probe's CPU (`perf`, bench/probe-scale.sh, 10,000 endpoints). Here a
//! probe is one write, usually one read into a 1 KiB buffer, and a parse.
//!
//! What it reads as hyper read it: a response head of at most 100 fields
//! and 400 KiB; informational (1xx) responses skipped; no body for HEAD,
//! 204 and 304; chunked when `Transfer-Encoding` ends in `chunked`, else
//! `Content-Length`, else until the server closes; the connection ends with
//! `Connection: close` or an HTTP/1.0 response without keep-alive.

use std::io;

use tokio::io::AsyncRead;

/// Most a response head may take, as hyper's default.
const MAX_HEAD: usize = 400 * 1024;
/// Most header fields a response head may have, as hyper's default.
const MAX_HEADERS: usize = 100;
/// Most a chunked body's trailer section may take, as hyper's limits.
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 100;
/// Most informational (1xx) responses before the final one.
const MAX_INFORMATIONAL: usize = 16;

/// What has been read and not yet used. Bytes are taken from the front by
/// moving an offset (a hostile server's thousands of tiny chunks or
/// trailer lines must not each copy the rest of the buffer); the used part
/// is dropped only before the next read.
#[derive(Debug)]
pub(super) struct Buf {
    data: Vec<u8>,
    pos: usize,
}

impl Buf {
    /// Room for most heads in one allocation small enough for the
    /// allocator's per-thread cache.
    pub(super) fn new() -> Buf {
        Buf {
            data: Vec::with_capacity(1024),
            pos: 0,
        }
    }

    /// The bytes not yet used.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }

    /// The first `n` bytes are used.
    pub(super) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
    }
}

/// Why a response head could not be had.
#[derive(Debug)]
pub(super) enum HeadError {
    /// The server closed the connection before a whole head arrived.
    Closed,
    /// Reading failed.
    Io(io::Error),
    /// More than [`MAX_HEADERS`] fields, or more than [`MAX_HEAD`] bytes.
    TooLarge,
    /// The status code is not a number from 100 to 999.
    Status,
    /// Anything else malformed, in hyper's words.
    Invalid(&'static str),
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The server closed the connection mid-body.
    Closed,
    /// Reading failed.
    Io(io::Error),
    /// Malformed chunks.
    Invalid(&'static str),
}

/// How the body of a response ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// After this many bytes.
    Length(u64),
    /// With a zero-size chunk and the trailer section.
    Chunked,
    /// When the server closes the connection.
    Eof,
}

/// A final response head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The server ends the connection after this response.
    pub(super) close: bool,
}

/// Reads into the spare room of `buf` (growing it when short): the bytes
/// read, 0 at the end of the stream. `wait = false`: only what has already
/// arrived, `None` when nothing has.
async fn fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buf,
    wait: bool,
) -> io::Result<Option<usize>> {
    if buf.pos > 0 {
        buf.data.drain(..buf.pos);
        buf.pos = 0;
    }
    let buf = &mut buf.data;
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(buf.capacity().max(1024));
    }
    std::future::poll_fn(|cx| {
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, buf) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(r.map(Some)),
            std::task::Poll::Pending if !wait => std::task::Poll::Ready(Ok(None)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// Reads until `buf` holds a final (not 1xx) response head, and takes it
/// out of `buf`, leaving what follows it. `head_request`: the request was
/// HEAD, so the response has no body whatever it says.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buf,
    head_request: bool,
) -> Result<Head, HeadError> {
    let mut informational = 0;
    loop {
        if !buf.is_empty() {
            match parse_head(buf.bytes(), head_request)? {
                Some((len, None)) => {
                    // Informational: the final response follows.
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(HeadError::Invalid(
                            "more than 16 informational (1xx) responses",
                        ));
                    }
                    buf.consume(len);
                    continue;
                }
                Some((len, Some(head))) => {
                    buf.consume(len);
                    return Ok(head);
                }
                None if buf.bytes().len() >= MAX_HEAD => return Err(HeadError::TooLarge),
                None => {}
            }
        }
        match fill(io, buf, true).await {
            Ok(Some(0)) => return Err(HeadError::Closed),
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// A complete head at the start of `buf`: its length, and the head (`None`
/// for an informational response); `None` while incomplete.
type Parsed = Option<(usize, Option<Head>)>;

fn parse_head(buf: &[u8], head_request: bool) -> Result<Parsed, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Status) => return Err(HeadError::Status),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Invalid("invalid HTTP version parsed"));
        }
        Err(_) => return Err(HeadError::Invalid("invalid HTTP header parsed")),
    };
    let status = response.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(HeadError::Status);
    }
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some((len, None)));
    }
    // Content-Length: every value the same (hyper takes `5, 5`), and only
    // judged when no Transfer-Encoding overrides it.
    let mut length: Result<Option<u64>, ()> = Ok(None);
    let (mut chunked, mut encoded, mut close, mut keep_alive) = (false, false, false, false);
    for field in response.headers.iter() {
        let value = field.value;
        if field.name.eq_ignore_ascii_case("content-length") {
            for t in value.split(|b| *b == b',') {
                let n = std::str::from_utf8(t)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                length = match (length, n) {
                    (Ok(None), Some(n)) => Ok(Some(n)),
                    (Ok(Some(l)), Some(n)) if l == n => Ok(Some(l)),
                    _ => Err(()),
                };
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Only the last coding says whether the body is chunked.
            chunked = tokens(value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            for t in tokens(value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let http10 = response.version == Some(0);
    let close = close || (http10 && !keep_alive);
    let framing = if head_request || status == 204 || status == 304 || status == 101 {
        Framing::Length(0)
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Eof
        }
    } else {
        match length {
            Ok(l) => l.map_or(Framing::Eof, Framing::Length),
            Err(()) => return Err(HeadError::Invalid("invalid content-length parsed")),
        }
    };
    // After a 101 the connection speaks another protocol.
    let close = close || framing == Framing::Eof || status == 101;
    Ok(Some((
        len,
        Some(Head {
            status,
            framing,
            close,
        }),
    )))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Where a chunked body's reading is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data.
    Data,
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section, after the last chunk.
    Trailers,
}

/// What the body gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The first this many bytes of the buffer are body data; the caller
    /// takes them out of it.
    Data(usize),
    /// The body has ended.
    End,
}

/// The reading of one response body.
#[derive(Debug)]
pub(super) struct Body {
    framing: Framing,
    /// Bytes left of the body (length) or of the chunk (chunked).
    left: u64,
    chunk: Chunk,
    ended: bool,
    /// Bytes and fields of the trailer section so far.
    trailers: (usize, usize),
}

impl Body {
    pub(super) fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size,
            ended: false,
            trailers: (0, 0),
        }
    }

    /// The next piece of body at the start of `buf`, reading when `buf`
    /// holds none. `wait = false`: only from what has already arrived,
    /// `None` when that is not enough.
    pub(super) async fn step<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut Buf,
        wait: bool,
    ) -> Result<Option<Step>, BodyError> {
        loop {
            if self.ended {
                return Ok(Some(Step::End));
            }
            if let Some(step) = self.take(buf)? {
                return Ok(Some(step));
            }
            match fill(io, buf, wait).await {
                Ok(Some(0)) if self.framing == Framing::Eof => {
                    self.ended = true;
                }
                Ok(Some(0)) => return Err(BodyError::Closed),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e) => return Err(BodyError::Io(e)),
            }
        }
    }

    /// A step from what `buf` holds, or `None` when it needs more.
    fn take(&mut self, buf: &mut Buf) -> Result<Option<Step>, BodyError> {
        loop {
            match self.framing {
                Framing::Eof if buf.is_empty() => return Ok(None),
                Framing::Eof => return Ok(Some(Step::Data(buf.bytes().len()))),
                Framing::Length(_) if self.left == 0 => {
                    self.ended = true;
                    return Ok(Some(Step::End));
                }
                Framing::Length(_) => return Ok(self.data(buf.bytes())),
                Framing::Chunked => {}
            }
            match self.chunk {
                Chunk::Size => match httparse::parse_chunk_size(buf.bytes()) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.consume(used);
                        self.chunk = Chunk::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.consume(used);
                        self.left = size;
                        self.chunk = Chunk::Data;
                    }
                    Ok(httparse::Status::Partial) if buf.bytes().len() > 1024 => {
                        return Err(BodyError::Invalid("invalid chunk size line"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(BodyError::Invalid("invalid chunk size line")),
                },
                Chunk::Data => {
                    let step = self.data(buf.bytes());
                    if self.left == 0 {
                        self.chunk = Chunk::DataEnd;
                    }
                    return Ok(step);
                }
                Chunk::DataEnd => match buf.bytes().get(..2) {
                    None if buf.bytes().first().is_none_or(|b| *b == b'\r') => return Ok(None),
                    Some(b"\r\n") => {
                        buf.consume(2);
                        self.chunk = Chunk::Size;
                    }
                    _ => return Err(BodyError::Invalid("invalid chunk end")),
                },
                Chunk::Trailers => {
                    let (bytes, fields) = &mut self.trailers;
                    match buf.bytes().windows(2).position(|w| w == b"\r\n") {
                        // The empty line that ends the trailer section.
                        Some(0) => {
                            buf.consume(2);
                            self.ended = true;
                            return Ok(Some(Step::End));
                        }
                        // A trailer field: not needed, only counted.
                        Some(at) => {
                            *bytes += at + 2;
                            *fields += 1;
                            buf.consume(at + 2);
                        }
                        None if *bytes + buf.bytes().len() > MAX_TRAILERS => {
                            return Err(BodyError::Invalid("trailers too large"));
                        }
                        None => return Ok(None),
                    }
                    if *bytes > MAX_TRAILERS || *fields > MAX_TRAILER_FIELDS {
                        return Err(BodyError::Invalid("trailers too large"));
                    }
                }
            }
        }
    }

    /// Data of the current length or chunk at the start of `buf`.
    fn data(&mut self, buf: &[u8]) -> Option<Step> {
        if buf.is_empty() {
            return None;
        }
        let n = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        self.left -= n as u64;
        Some(Step::Data(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `wire` in pieces of `piece` bytes: the head, then every body
    /// byte; with the body's end, what is left in the buffer.
    async fn read_all(wire: &[u8], piece: usize, head_request: bool) -> (Head, Vec<u8>, Vec<u8>) {
        let mut builder = tokio_test_io(wire, piece);
        let mut buf = Buf::new();
        let head = read_head(&mut builder, &mut buf, head_request)
            .await
            .expect("head");
        let mut body = Body::new(head.framing);
        let mut data = Vec::new();
        loop {
            match body.step(&mut builder, &mut buf, true).await.expect("body") {
                Some(Step::Data(n)) => {
                    data.extend_from_slice(&buf.bytes()[..n]);
                    buf.consume(n);
                }
                Some(Step::End) => break,
                None => unreachable!("waits"),
            }
        }
        (head, data, buf.bytes().to_vec())
    }

    /// A reader that gives `wire` in pieces, then the end of the stream.
    fn tokio_test_io(wire: &[u8], piece: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<Vec<u8>> = wire.chunks(piece.max(1)).map(<[u8]>::to_vec).collect();
        Pieces(chunks.into_iter().rev().collect())
    }

    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(mut next) = self.0.pop() {
                let n = next.len().min(buf.remaining());
                buf.put_slice(&next[..n]);
                if n < next.len() {
                    self.0.push(next.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn bodies_are_framed_as_hyper_frames_them() {
        /// Wire, HEAD, status, body, close, what follows.
        type Case = (&'static [u8], bool, u16, &'static [u8], bool, &'static [u8]);
        let cases: &[Case] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", false, 200, b"ok", false, b"NEXT"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\nT: v\r\n\r\n", false, 200, b"ok!!!", false, b""),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", false, 204, b"", false, b""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true, 200, b"", false, b""),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", false, 200, b"until the end", true, b""),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", false, 200, b"x", false, b""),
            (b"HTTP/1.1 503 Busy\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n", false, 503, b"", true, b""),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", false, 200, b"raw", true, b""),
        ];
        for (wire, head_request, status, data, close, rest) in cases {
            for piece in [1, 3, 7, 4096] {
                let (head, got, left) = read_all(wire, piece, *head_request).await;
                let what = String::from_utf8_lossy(wire);
                assert_eq!(head.status, *status, "{what} in pieces of {piece}");
                assert_eq!(got, *data, "{what} in pieces of {piece}");
                assert_eq!(head.close, *close, "{what}");
                if piece >= wire.len() {
                    // Read whole: what follows the body stays in the buffer.
                    assert_eq!(left, *rest, "{what}");
                }
            }
        }
    }

    #[tokio::test]
    async fn malformed_heads_are_named_as_hyper_names_them() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
                "Invalid(\"invalid HTTP version parsed\")",
            ),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", "Status"),
            (b"HTTP/1.1 099 Low\r\n\r\n", "Status"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                "Invalid(\"invalid content-length parsed\")",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "Invalid(\"invalid content-length parsed\")",
            ),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                "Invalid(\"invalid HTTP header parsed\")",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "Closed"),
            (b"", "Closed"),
        ];
        for (wire, want) in cases {
            let mut io = tokio_test_io(wire, 5);
            let got = read_head(&mut io, &mut Buf::new(), false)
                .await
                .expect_err("malformed");
            assert_eq!(
                format!("{got:?}"),
                *want,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let got = read_head(&mut tokio_test_io(&many, 4096), &mut Buf::new(), false).await;
        assert!(matches!(got, Err(HeadError::TooLarge)), "{got:?}");
    }

    #[tokio::test]
    async fn what_hyper_takes_is_taken_and_hostile_sizes_are_bounded() {
        // Equal lengths in a list; a 101 ends the HTTP exchange.
        let (head, data, _) = read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            4096,
            false,
        )
        .await;
        assert_eq!(
            (head.framing, data.as_slice()),
            (Framing::Length(2), &b"ok"[..])
        );
        let (head, _, _) =
            read_all(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", 4096, false).await;
        assert!(head.close);
        // 17 informational responses are too many.
        let mut wire = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(17);
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let got = read_head(&mut tokio_test_io(&wire, 4096), &mut Buf::new(), false).await;
        assert!(matches!(got, Err(HeadError::Invalid(_))), "{got:?}");
        // 16 are not.
        let mut wire = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(16);
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let (head, _, _) = read_all(&wire, 4096, false).await;
        assert_eq!(head.status, 200);
        // Trailers: 101 fields, or more than 16 KiB, are refused; 100 small
        // ones are read past.
        for (fields, field, ok) in [
            (100, "a: b", true),
            (101, "a: b", false),
            (2, &*"x".repeat(9000), false),
        ] {
            let mut wire =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n".to_vec();
            for _ in 0..fields {
                wire.extend_from_slice(field.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let mut io = tokio_test_io(&wire, 700);
            let mut buf = Buf::new();
            let head = read_head(&mut io, &mut buf, false).await.expect("head");
            let mut body = Body::new(head.framing);
            let end = loop {
                match body.step(&mut io, &mut buf, true).await {
                    Ok(Some(Step::Data(n))) => buf.consume(n),
                    other => break other,
                }
            };
            assert_eq!(
                matches!(end, Ok(Some(Step::End))),
                ok,
                "{fields} fields: {end:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_or_with_bad_chunks_is_an_error() {
        for (wire, want) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"[..],
                "Closed",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "Closed",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "Invalid(\"invalid chunk size line\")",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
                "Invalid(\"invalid chunk end\")",
            ),
        ] {
            let mut io = tokio_test_io(wire, 3);
            let mut buf = Buf::new();
            let head = read_head(&mut io, &mut buf, false).await.expect("head");
            let mut body = Body::new(head.framing);
            let err = loop {
                match body.step(&mut io, &mut buf, true).await {
                    Ok(Some(Step::Data(n))) => buf.consume(n),
                    Ok(other) => panic!("{other:?} for {}", String::from_utf8_lossy(wire)),
                    Err(e) => break e,
                }
            };
            assert_eq!(
                format!("{err:?}"),
                want,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
