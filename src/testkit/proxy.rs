//! Test support: a fault-injecting HTTP/1.1 proxy to put between lifeboat and
//! an S3 server, so tests can show what a flaky network or a failing service
//! does to a backup: error statuses, dropped connections, lost
//! acknowledgements (the request was carried out, the answer never arrives),
//! cut answers, stalls, latency and a service that is down.
//!
//! Plain threads and std sockets: one thread accepts, one thread per client
//! connection. Every request goes to the server on a new connection, and every
//! answer closes the client's connection (`Connection: close`), so a client
//! never reuses a connection and each request meets the rules on its own.
//! The request is forwarded byte for byte (only `Expect` is answered here and
//! removed), so SigV4 signatures stay valid: a client signs for the proxy's
//! host, which is the `Host` the server sees.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the proxy waits for a client's request, and for a server's answer.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request or response head accepted.
const MAX_HEAD: usize = 1 << 20;

/// What the proxy does to a request a [`Rule`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status and an S3-style XML error, without forwarding.
    Status(u16),
    /// Closes the connection after reading the request; forwards nothing.
    Drop,
    /// Forwards the request, lets the server answer it fully, then closes the
    /// client's connection without relaying the answer: a lost acknowledgement.
    DropAfterForward,
    /// Relays the answer's head and half its body, then closes (an answer
    /// without a body is cut in the middle of its head).
    CutResponse,
    /// Reads the request, keeps the connection silent this long, then closes.
    Stall(Duration),
}

/// Which requests get a [`Fault`], and how many times. A field that is `None`
/// matches anything. Build with [`Rule::new`] and the methods, or literally.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `"GET"`, `"PUT"`, ... (exact).
    pub method: Option<&'static str>,
    /// A substring of the path as sent (percent-encoded, e.g. `/bucket/wal/`).
    pub path_contains: Option<String>,
    /// A substring of the query string as sent (e.g. `uploadId=`, `partNumber=2`).
    pub query_contains: Option<String>,
    pub fault: Fault,
    /// Matches left; the rule is used up at 0. `usize::MAX` never is.
    pub times: usize,
}

impl Rule {
    /// `fault` for the next request, whatever it is.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            query_contains: None,
            fault,
            times: 1,
        }
    }

    pub fn method(mut self, method: &'static str) -> Rule {
        self.method = Some(method);
        self
    }

    pub fn path(mut self, contains: impl Into<String>) -> Rule {
        self.path_contains = Some(contains.into());
        self
    }

    pub fn query(mut self, contains: impl Into<String>) -> Rule {
        self.query_contains = Some(contains.into());
        self
    }

    /// How many matching requests get the fault (`usize::MAX`: all, forever).
    pub fn times(mut self, times: usize) -> Rule {
        self.times = times;
        self
    }

    fn matches(&self, req: &RequestHead) -> bool {
        self.times > 0
            && self.method.is_none_or(|m| m == req.method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| req.path.contains(p))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| req.query.contains(q))
    }
}

/// One request the proxy read, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// As sent (percent-encoded), without the query.
    pub path: String,
    /// As sent, without the `?`; empty if none.
    pub query: String,
    /// The status the server answered (also when the answer was then dropped
    /// or cut) or the injected one; `None` if there was no answer (yet).
    pub status: Option<u16>,
    /// The injected fault (`Debug` form, e.g. `Status(503)`), or what went
    /// wrong with the server (`upstream: ...`).
    pub fault: Option<String>,
}

/// A running proxy. Dropping it stops accepting connections; requests in
/// flight finish (stalls end early).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    down: AtomicBool,
    latency: Mutex<Duration>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<(u64, Logged)>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// A proxy to `upstream` on 127.0.0.1 and a free port.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream)
    }

    /// A proxy to `upstream` listening on `listen` (port 0: a free one).
    pub fn start_at(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            down: AtomicBool::new(false),
            latency: Mutex::new(Duration::ZERO),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("faultproxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:PORT`, to configure as the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule after the existing ones; the first rule that matches a
    /// request (and is not used up) decides its fault.
    pub fn inject(&self, rule: Rule) {
        lock(&self.shared.rules).push(rule);
    }

    /// Removes all rules, used up or not.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Matches left over all rules (saturating at `usize::MAX`): 0 once
    /// every injected fault has happened.
    pub fn faults_left(&self) -> usize {
        lock(&self.shared.rules)
            .iter()
            .fold(0usize, |n, r| n.saturating_add(r.times))
    }

    /// Delay before each request is forwarded or answered (a slow network).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// While down, connections are accepted and closed at once, before a
    /// request is read (an unreachable service); nothing is logged.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The requests read so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log)
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Forgets the logged requests (rules stay).
    pub fn clear(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if shared.down.load(Ordering::SeqCst) {
            let _ = conn.shutdown(Shutdown::Both);
            continue;
        }
        let shared = Arc::clone(shared);
        let _ = std::thread::Builder::new()
            .name("faultproxy-conn".into())
            .spawn(move || {
                let _ = serve(&shared, conn);
            });
    }
}

impl Shared {
    fn log_request(&self, req: &RequestHead) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.log).push((
            id,
            Logged {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
                status: None,
                fault: None,
            },
        ));
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Logged)) {
        if let Some((_, l)) = lock(&self.log).iter_mut().find(|(i, _)| *i == id) {
            f(l);
        }
    }

    fn take_fault(&self, req: &RequestHead) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let rule = rules.iter_mut().find(|r| r.matches(req))?;
        if rule.times != usize::MAX {
            rule.times -= 1;
        }
        Some(rule.fault.clone())
    }

    /// Sleeps, waking early when the proxy stops.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
    }
}

/// One client connection: one request, one answer (or a fault), then close.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(&client);
    let Some(head) = read_request_head(&mut reader)? else {
        return Ok(());
    };
    let id = shared.log_request(&head);
    let result = handle(shared, id, &head, &mut reader, &client);
    if let Err(e) = &result {
        shared.update(id, |l| {
            if l.fault.is_none() && l.status.is_none() {
                l.fault = Some(format!("error: {e}"));
            }
        });
    }
    let _ = client.shutdown(Shutdown::Both);
    result
}

fn handle(
    shared: &Shared,
    id: u64,
    head: &RequestHead,
    reader: &mut BufReader<&TcpStream>,
    mut client: &TcpStream,
) -> io::Result<()> {
    if head.chunked {
        shared.update(id, |l| {
            l.status = Some(501);
            l.fault = Some("chunked request bodies are not supported".into());
        });
        return write_error(client, 501, "NotImplemented", "chunked request body", head);
    }
    if head.expect_continue {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = vec![0; head.content_length];
    reader.read_exact(&mut body)?;

    let fault = shared.take_fault(head);
    if let Some(f) = &fault {
        shared.update(id, |l| l.fault = Some(format!("{f:?}")));
    }
    let latency = *lock(&shared.latency);
    shared.sleep(latency);

    match fault {
        Some(Fault::Status(code)) => {
            shared.update(id, |l| l.status = Some(code));
            write_error(client, code, error_code(code), "injected", head)
        }
        Some(Fault::Drop) => Ok(()),
        Some(Fault::Stall(d)) => {
            shared.sleep(d);
            Ok(())
        }
        None | Some(Fault::DropAfterForward | Fault::CutResponse) => {
            let mut upstream = match forward(shared.upstream, head, &body) {
                Ok(u) => u,
                Err(e) => {
                    shared.update(id, |l| {
                        l.status = Some(502);
                        l.fault = Some(format!("upstream: {e}"));
                    });
                    return write_error(client, 502, "BadGateway", "upstream unreachable", head);
                }
            };
            let resp = match read_response_head(&mut upstream) {
                Ok(r) => r,
                Err(e) => {
                    shared.update(id, |l| l.fault = Some(format!("upstream: {e}")));
                    return Ok(());
                }
            };
            shared.update(id, |l| l.status = Some(resp.status));
            let framing = resp.framing(head);
            match fault {
                None => {
                    client.write_all(&resp.head_for_client())?;
                    relay_body(&mut upstream, framing, &mut client)?;
                    client.flush()
                }
                Some(Fault::DropAfterForward) => {
                    relay_body(&mut upstream, framing, &mut io::sink()).map(|_| ())
                }
                _ => {
                    let mut body = Vec::new();
                    relay_body(&mut upstream, framing, &mut body)?;
                    let head = resp.head_for_client();
                    if body.is_empty() {
                        client.write_all(&head[..head.len() / 2])
                    } else {
                        client.write_all(&head)?;
                        client.write_all(&body[..body.len() / 2])
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ requests

struct RequestHead {
    method: String,
    path: String,
    query: String,
    /// Request line and headers as sent, minus `Expect`, with the blank line.
    raw: Vec<u8>,
    content_length: usize,
    chunked: bool,
    expect_continue: bool,
}

/// Reads lines up to the blank line; `None` if the client closed first.
fn read_head_lines(reader: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of an HTTP head",
            ));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too large",
            ));
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF before a request
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (k, v) = line.split_once(':')?;
    k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_request_head(reader: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    let Some(lines) = read_head_lines(reader)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {:?}", lines[0])));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        raw: Vec::new(),
        content_length: 0,
        chunked: false,
        expect_continue: false,
    };
    head.raw.extend_from_slice(lines[0].as_bytes());
    head.raw.extend_from_slice(b"\r\n");
    for line in &lines[1..] {
        if let Some(v) = header_value(line, "content-length") {
            head.content_length = v
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
        } else if let Some(v) = header_value(line, "transfer-encoding") {
            head.chunked |= v.to_ascii_lowercase().contains("chunked");
        } else if let Some(v) = header_value(line, "expect") {
            head.expect_continue |= v.eq_ignore_ascii_case("100-continue");
            continue;
        }
        head.raw.extend_from_slice(line.as_bytes());
        head.raw.extend_from_slice(b"\r\n");
    }
    head.raw.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

/// Sends the request to the server on a new connection.
fn forward(
    upstream: SocketAddr,
    head: &RequestHead,
    body: &[u8],
) -> io::Result<BufReader<TcpStream>> {
    let mut conn = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(&head.raw)?;
    conn.write_all(body)?;
    conn.flush()?;
    Ok(BufReader::new(conn))
}

// ------------------------------------------------------------------ responses

struct ResponseHead {
    status: u16,
    /// Status line and headers, without the blank line.
    lines: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilEof,
}

impl ResponseHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.lines[1..].iter().find_map(|l| header_value(l, name))
    }

    fn framing(&self, req: &RequestHead) -> Framing {
        if req.method == "HEAD" || matches!(self.status, 100..=199 | 204 | 304) {
            Framing::Empty
        } else if self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(n) = self.header("content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(n)
        } else {
            Framing::UntilEof
        }
    }

    /// The head with `Connection: close` instead of the server's choice.
    fn head_for_client(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let hop = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| header_value(line, h).is_some());
            if i == 0 || !hop {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}

/// The server's answer head, after any interim (1xx) answers.
fn read_response_head(upstream: &mut impl BufRead) -> io::Result<ResponseHead> {
    loop {
        let lines = read_head_lines(upstream)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "closed without an answer")
        })?;
        let status = lines[0]
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid(format!("bad status line {:?}", lines[0])))?;
        if !(100..200).contains(&status) || status == 101 {
            return Ok(ResponseHead { status, lines });
        }
    }
}

/// Copies the body as framed (chunked bodies with their chunk syntax).
fn relay_body(
    upstream: &mut impl BufRead,
    framing: Framing,
    out: &mut impl Write,
) -> io::Result<u64> {
    match framing {
        Framing::Empty => Ok(0),
        Framing::Length(n) => {
            let copied = io::copy(&mut upstream.take(n), out)?;
            if copied < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed before the end of the body",
                ));
            }
            Ok(copied)
        }
        Framing::UntilEof => io::copy(upstream, out),
        Framing::Chunked => {
            let mut total = 0;
            loop {
                let mut line = Vec::new();
                if upstream.read_until(b'\n', &mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed in a chunked body",
                    ));
                }
                out.write_all(&line)?;
                total += line.len() as u64;
                let text = String::from_utf8_lossy(&line);
                let size = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| invalid(format!("bad chunk size line {text:?}")))?;
                if size == 0 {
                    // Trailers up to the blank line.
                    loop {
                        let mut line = Vec::new();
                        if upstream.read_until(b'\n', &mut line)? == 0 {
                            return Ok(total);
                        }
                        out.write_all(&line)?;
                        total += line.len() as u64;
                        if line == b"\r\n" || line == b"\n" {
                            return Ok(total);
                        }
                    }
                }
                // The chunk and its CRLF.
                total += relay_body(upstream, Framing::Length(size + 2), out)?;
            }
        }
    }
}

/// S3's error code for an injected status.
fn error_code(status: u16) -> &'static str {
    match status {
        400 => "InvalidRequest",
        403 => "AccessDenied",
        404 => "NoSuchKey",
        409 => "OperationAborted",
        412 => "PreconditionFailed",
        429 | 503 => "ServiceUnavailable",
        500 => "InternalError",
        501 => "NotImplemented",
        _ => "ServiceUnavailable",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

fn write_error(
    mut client: &TcpStream,
    status: u16,
    code: &str,
    message: &str,
    req: &RequestHead,
) -> io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    client.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        client.write_all(body.as_bytes())?;
    }
    client.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny HTTP server: one request per connection; records what it got.
    /// `/chunked` answers chunked, `/eof` without a length (closing), `/empty`
    /// with 204, anything else `200` with "METHOD TARGET BODYLEN" and
    /// `Connection: keep-alive`.
    struct Upstream {
        addr: SocketAddr,
        seen: Arc<Seen>,
    }

    /// Request lines and bodies the upstream got.
    type Seen = Mutex<Vec<(String, Vec<u8>)>>;

    impl Upstream {
        fn start() -> Upstream {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = Arc::clone(&seen);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let log = Arc::clone(&log);
                    std::thread::spawn(move || upstream_answer(conn, &log));
                }
            });
            Upstream { addr, seen }
        }

        fn seen(&self) -> Vec<String> {
            lock(&self.seen).iter().map(|(l, _)| l.clone()).collect()
        }
    }

    fn upstream_answer(conn: TcpStream, log: &Seen) {
        let mut reader = BufReader::new(&conn);
        let Ok(Some(head)) = read_request_head(&mut reader) else {
            return;
        };
        let mut body = vec![0; head.content_length];
        reader.read_exact(&mut body).unwrap();
        let first = String::from_utf8_lossy(&head.raw)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let target = if head.query.is_empty() {
            head.path.clone()
        } else {
            format!("{}?{}", head.path, head.query)
        };
        lock(log).push((first, body.clone()));
        let mut out = &conn;
        let answer = match head.path.as_str() {
            "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 6\r\nhello \r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_string(),
            "/eof" => {
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_string()
            }
            "/empty" => "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n".to_string(),
            _ => {
                let text = format!("{} {target} {}", head.method, body.len());
                let text = if head.path == "/big" {
                    text.repeat(10_000)
                } else {
                    text
                };
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
            }
        };
        let _ = out.write_all(answer.as_bytes());
        if head.path != "/eof" {
            // Keep-alive: wait for the proxy to close, as a real server would.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    }

    /// Sends a raw request, returns everything until the proxy closes.
    fn exchange(proxy: &FaultProxy, request: &str) -> Vec<u8> {
        let mut conn = TcpStream::connect(proxy.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        // A reset is as good as a close here.
        let _ = conn.read_to_end(&mut out);
        out
    }

    fn get(proxy: &FaultProxy, target: &str) -> String {
        String::from_utf8(exchange(
            proxy,
            &format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr()),
        ))
        .unwrap()
    }

    fn split(answer: &str) -> (&str, &str) {
        answer.split_once("\r\n\r\n").unwrap_or((answer, ""))
    }

    #[test]
    fn relays_requests_and_answers_and_closes_each_connection() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));

        let answer = get(&proxy, "/bucket/a%20b?list-type=2");
        let (head, body) = split(&answer);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("Connection: close"), "{head}");
        assert!(
            !head.contains("keep-alive") && !head.contains("Keep-Alive"),
            "{head}"
        );
        assert_eq!(body, "GET /bucket/a%20b?list-type=2 0");

        let answer = String::from_utf8(exchange(
            &proxy,
            "PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        ))
        .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{answer}"
        );
        assert!(answer.ends_with("PUT /bucket/k 5"), "{answer}");
        assert_eq!(lock(&up.seen)[1].1, b"hello");

        let answer = get(&proxy, "/chunked");
        let (head, body) = split(&answer);
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert_eq!(
            body,
            "6\r\nhello \r\n5;ext=1\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        );

        assert!(get(&proxy, "/eof").ends_with("\r\n\r\nuntil the end"));
        let answer = get(&proxy, "/empty");
        assert!(
            answer.starts_with("HTTP/1.1 204") && answer.ends_with("Connection: close\r\n\r\n")
        );

        let big = get(&proxy, "/big");
        assert_eq!(split(&big).1, "GET /big 0".repeat(10_000));

        let log = proxy.requests();
        assert_eq!(log.len(), 6);
        assert_eq!(
            log[0],
            Logged {
                method: "GET".into(),
                path: "/bucket/a%20b".into(),
                query: "list-type=2".into(),
                status: Some(200),
                fault: None,
            }
        );
        assert_eq!(log[4].status, Some(204));
        proxy.clear();
        assert!(proxy.requests().is_empty());
    }

    #[test]
    fn status_fault_answers_without_forwarding() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule::new(Fault::Status(503)));
        let answer = get(&proxy, "/bucket/k");
        let (head, body) = split(&answer);
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close"));
        assert!(
            body.contains(
                "<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
            )
        );
        assert!(up.seen().is_empty());
        let log = proxy.requests();
        assert_eq!(log[0].status, Some(503));
        assert_eq!(log[0].fault.as_deref(), Some("Status(503)"));

        // Used up: the next request passes.
        assert!(get(&proxy, "/bucket/k").starts_with("HTTP/1.1 200"));
        assert_eq!(up.seen().len(), 1);
        assert_eq!(proxy.faults_left(), 0);
    }

    #[test]
    fn drop_forwards_nothing_and_answers_nothing() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule::new(Fault::Drop));
        assert_eq!(get(&proxy, "/k"), "");
        assert!(up.seen().is_empty());
        assert_eq!(proxy.requests()[0].fault.as_deref(), Some("Drop"));
        assert_eq!(proxy.requests()[0].status, None);
    }

    #[test]
    fn drop_after_forward_loses_only_the_acknowledgement() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule::new(Fault::DropAfterForward).method("PUT"));
        let answer = exchange(
            &proxy,
            "PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(answer.is_empty());
        assert_eq!(up.seen(), ["PUT /bucket/k HTTP/1.1"]);
        assert_eq!(lock(&up.seen)[0].1, b"abc");
        let log = proxy.requests();
        assert_eq!(log[0].status, Some(200), "the server did answer");
        assert_eq!(log[0].fault.as_deref(), Some("DropAfterForward"));
    }

    #[test]
    fn cut_response_relays_half_the_body() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule::new(Fault::CutResponse).times(2));
        let answer = get(&proxy, "/big");
        let (head, body) = split(&answer);
        let full = "GET /big 0".repeat(10_000);
        assert!(
            head.contains(&format!("Content-Length: {}", full.len())),
            "{head}"
        );
        assert_eq!(body.len(), full.len() / 2);
        assert!(full.starts_with(body));

        // Nothing to halve: the head is cut.
        let answer = get(&proxy, "/empty");
        assert!(
            !answer.is_empty() && !answer.contains("\r\n\r\n"),
            "{answer:?}"
        );
        assert_eq!(up.seen().len(), 2);
    }

    #[test]
    fn stall_keeps_silent_then_closes() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule::new(Fault::Stall(Duration::from_millis(400))));
        let started = Instant::now();
        assert_eq!(get(&proxy, "/k"), "");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(up.seen().is_empty());
    }

    #[test]
    fn rules_match_method_path_and_query_in_order() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.inject(Rule {
            method: Some("GET"),
            path_contains: Some("/wal/".into()),
            query_contains: Some("partNumber=2".into()),
            fault: Fault::Status(500),
            times: 1,
        });
        proxy.inject(
            Rule::new(Fault::Status(404))
                .path("/wal/")
                .times(usize::MAX),
        );
        assert!(get(&proxy, "/b/data/x?partNumber=2").starts_with("HTTP/1.1 200"));
        assert!(get(&proxy, "/b/wal/x?partNumber=2&uploadId=u").starts_with("HTTP/1.1 500"));
        assert!(get(&proxy, "/b/wal/x?partNumber=2&uploadId=u").starts_with("HTTP/1.1 404"));
        assert!(get(&proxy, "/b/wal/y").starts_with("HTTP/1.1 404"));
        let answer = exchange(&proxy, "DELETE /b/data/x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        let statuses: Vec<Option<u16>> = proxy.requests().iter().map(|l| l.status).collect();
        assert_eq!(
            statuses,
            [Some(200), Some(500), Some(404), Some(404), Some(200)]
        );
        assert_eq!(proxy.faults_left(), usize::MAX);
        proxy.clear_rules();
        assert!(get(&proxy, "/b/wal/y").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn latency_delays_every_request() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.set_latency(Duration::from_millis(300));
        for _ in 0..2 {
            let started = Instant::now();
            assert!(get(&proxy, "/k").starts_with("HTTP/1.1 200"));
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
        proxy.set_latency(Duration::ZERO);
        let started = Instant::now();
        assert!(get(&proxy, "/k").starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn down_closes_connections_unread() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        proxy.set_down(true);
        assert_eq!(get(&proxy, "/k"), "");
        assert!(up.seen().is_empty());
        assert!(proxy.requests().is_empty());
        proxy.set_down(false);
        assert!(get(&proxy, "/k").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn unreachable_upstream_is_a_bad_gateway() {
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(closed).unwrap();
        assert!(get(&proxy, "/k").starts_with("HTTP/1.1 502"));
        assert!(
            proxy.requests()[0]
                .fault
                .as_deref()
                .unwrap()
                .starts_with("upstream: ")
        );
    }

    #[test]
    fn drop_stops_listening() {
        let up = Upstream::start();
        let proxy = FaultProxy::start(up.addr).unwrap();
        let addr = proxy.addr();
        drop(proxy);
        assert!(TcpStream::connect(addr).is_err());
    }
}
