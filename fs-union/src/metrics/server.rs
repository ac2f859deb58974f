//! The metrics endpoint (`metrics-listen`): a deliberately small HTTP/1.1 server on
//! a plain `TcpListener`, in a thread of its own, that answers `GET /metrics` with
//! the Prometheus text and every other request with an error status.
//!
//! One connection carries one request: the server reads the request line and the
//! headers (at most [`HEAD_LIMIT`] bytes, within [`READ_DEADLINE`]), answers with
//! `Connection: close` and closes. Connections are served one after another, so a
//! client that stalls delays the next scrape by the deadline at most and can never
//! pile up threads. Nothing a client sends can stop the server: every failure ends
//! that connection only.
//!
//! The address is bound by the caller before the pool is mounted, so that a busy port
//! stops the mount with an error naming it; this module only serves.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) read, in bytes.
pub const HEAD_LIMIT: usize = 8 * 1024;

/// How long a client has to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// How long writing the answer may block on a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, and for how many bytes, a refused request is read on before closing.
const LINGER: Duration = Duration::from_millis(200);
const LINGER_BYTES: u64 = 64 * 1024;

/// The path the metrics are served at.
const PATH: &str = "/metrics";

/// The content type of the Prometheus text exposition format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `listener` in a new thread until the process ends; each `GET /metrics`
/// answers with the text `render` makes at that moment.
pub fn spawn(
    listener: TcpListener,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("lhfs-metrics".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => answer(stream, &render),
                Err(e) => {
                    // Out of descriptors, or a client gone before the accept: wait a
                    // little rather than spin, and keep serving.
                    crate::daemon::log(&format!("metrics endpoint: accept failed: {e}"));
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })
}

/// An answer's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }

    /// The body of an error answer: what went wrong and what is served.
    fn message(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::BadRequest => "bad request; send GET /metrics HTTP/1.1\n",
            Status::NotFound => "not found; the metrics are at /metrics\n",
            Status::MethodNotAllowed => "only GET is served\n",
            Status::RequestTimeout => "the request took too long\n",
            Status::HeadTooLarge => "the request head is too large\n",
        }
    }
}

/// What the request head `head` asks for: [`Status::Ok`] for the metrics, or the
/// error to answer with.
fn route(head: &[u8]) -> Status {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Status::BadRequest;
    };
    let token = |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with(b"/") || !version.starts_with(b"HTTP/1.") {
        return Status::BadRequest;
    }
    // A query string changes nothing; Prometheus sends none anyway.
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    if path != PATH.as_bytes() {
        Status::NotFound
    } else if method != b"GET" {
        Status::MethodNotAllowed
    } else {
        Status::Ok
    }
}

/// A whole answer: status line, headers and body.
fn response(status: Status, body: &str) -> Vec<u8> {
    let kind = match status {
        Status::Ok => METRICS_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET\r\n",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Why no complete request head arrived.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed the connection or it failed: nobody to answer.
    Gone,
    /// The deadline passed first.
    Timeout,
    /// More than [`HEAD_LIMIT`] bytes without the blank line that ends a head.
    TooLarge,
}

/// The end of a request head in `buf`: after the first empty line (CRLF or a bare
/// LF, which some clients send).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads one request head from `stream` within `deadline`.
fn read_head(stream: &mut impl ReadWithTimeout, deadline: Duration) -> Result<Vec<u8>, HeadError> {
    let until = Instant::now() + deadline;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        // The deadline covers the whole head, so a client trickling bytes cannot
        // hold the server longer than one that sends nothing.
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        stream.set_timeout(left).map_err(|_| HeadError::Gone)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout)
            }
            Err(_) => return Err(HeadError::Gone),
        }
        if let Some(end) = head_end(&head) {
            if end > HEAD_LIMIT {
                return Err(HeadError::TooLarge);
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > HEAD_LIMIT {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A byte stream whose reads can time out: a `TcpStream`, or a test double.
trait ReadWithTimeout: Read {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl ReadWithTimeout for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

/// Answers the one request of a connection, then closes it.
fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) {
    let status = match read_head(&mut stream, READ_DEADLINE) {
        Ok(head) => route(&head),
        Err(HeadError::Timeout) => Status::RequestTimeout,
        Err(HeadError::TooLarge) => Status::HeadTooLarge,
        Err(HeadError::Gone) => return,
    };
    let body = match status {
        Status::Ok => render(),
        other => other.message().to_owned(),
    };
    // A client that stops reading only loses its own answer.
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.write_all(&response(status, &body));
    let _ = stream.shutdown(Shutdown::Write);
    if status != Status::Ok {
        // Closing with request bytes unread sends a reset, which can destroy the
        // answer before the client reads it: read on until the client closes.
        let _ = stream.set_read_timeout(Some(LINGER));
        let _ = io::copy(&mut (&stream).take(LINGER_BYTES), &mut io::sink());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn routes_by_request_line() {
        let ok = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert_eq!(route(ok), Status::Ok);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n"), Status::Ok);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Status::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Status::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Status::MethodNotAllowed
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02",
        ] {
            assert_eq!(route(bad), Status::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn answers_carry_length_type_and_close() {
        let text = String::from_utf8(response(Status::Ok, "a 1\n")).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let text = String::from_utf8(response(Status::MethodNotAllowed, "x")).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
    }

    /// Bytes handed out in the given pieces, then a timeout or the end.
    struct Script {
        pieces: Vec<Vec<u8>>,
        then_timeout: bool,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pieces.is_empty() {
                return if self.then_timeout {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(0)
                };
            }
            let piece = self.pieces.remove(0);
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.pieces.insert(0, piece[n..].to_vec());
            }
            Ok(n)
        }
    }

    impl ReadWithTimeout for Script {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(pieces: &[&[u8]], then_timeout: bool) -> Script {
        Script {
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
            then_timeout,
        }
    }

    #[test]
    fn reads_a_head_in_pieces_and_stops_at_limits() {
        let second = Duration::from_secs(1);
        let mut s = script(&[b"GET /metrics HT", b"TP/1.1\r\n", b"\r\nbody"], false);
        assert_eq!(
            read_head(&mut s, second).unwrap(),
            b"GET /metrics HTTP/1.1\r\n\r\n"
        );
        let mut s = script(&[b"GET /metrics HTTP/1.1\r\n"], true);
        assert_eq!(read_head(&mut s, second), Err(HeadError::Timeout));
        let mut s = script(&[b"GET /metrics HTTP/1.1\r\n"], false);
        assert_eq!(read_head(&mut s, second), Err(HeadError::Gone));
        let big = vec![b'a'; HEAD_LIMIT + 1];
        let mut s = script(&[&big, b"\r\n\r\n"], false);
        assert_eq!(read_head(&mut s, second), Err(HeadError::TooLarge));
        let mut s = script(&[b"GET / HTTP/1.1\r\n\r\n"], false);
        assert_eq!(read_head(&mut s, Duration::ZERO), Err(HeadError::Timeout));
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_survives_bad_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(listener, || "x_total 1\n".to_owned()).unwrap();
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nx_total 1\n"), "{ok}");
        assert!(ask(addr, b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(ask(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let huge = vec![b'a'; 3 * HEAD_LIMIT];
        assert!(ask(addr, &huge).starts_with("HTTP/1.1 431 "));
        // A client that leaves without a word costs nothing.
        drop(TcpStream::connect(addr).unwrap());
        assert_eq!(ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n"), ok);
    }
}
