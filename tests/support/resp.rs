//! RESP test tools: a blocking RESP client whose replies are decoded by an
//! independent implementation (the `redis-protocol` crate), a
//! `redis-server` started for differential tests (or a printed note and
//! `None` when it is not installed), and a runner that sends the same
//! script to two servers and compares the replies after normalising what
//! legitimately differs (stream IDs, ids, versions, times).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame as Frame2;
use redis_protocol::resp3::types::OwnedFrame as Frame3;

/// A reply, the same shape for RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+…`
    Status(String),
    /// `-…` (or a RESP3 blob error)
    Error(String),
    /// `:…`
    Int(i64),
    /// `$…`
    Bulk(Vec<u8>),
    /// A null of any kind.
    Null,
    /// `*…`
    Array(Vec<Value>),
    /// RESP3 `%…`
    Map(Vec<(Value, Value)>),
    /// RESP3 `~…`
    Set(Vec<Value>),
    /// RESP3 `#…`
    Bool(bool),
    /// RESP3 `,…`
    Double(f64),
    /// RESP3 `=…` (its text without the format)
    Verbatim(Vec<u8>),
}

impl Value {
    /// A bulk string of `text`.
    pub fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    /// The text of a bulk, status or verbatim value.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Bulk(b) | Value::Verbatim(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Status(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The items of an array or set.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(v) | Value::Set(v) => v,
            _ => &[],
        }
    }

    /// Every value inside this one (itself first), depth first.
    pub fn walk(&self, visit: &mut impl FnMut(&Value)) {
        visit(self);
        match self {
            Value::Array(v) | Value::Set(v) => v.iter().for_each(|i| i.walk(visit)),
            Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
                k.walk(visit);
                v.walk(visit);
            }),
            _ => {}
        }
    }

    /// This value with `change` applied to every value inside it.
    pub fn map(&self, change: &mut impl FnMut(&Value) -> Option<Value>) -> Value {
        if let Some(changed) = change(self) {
            return changed;
        }
        match self {
            Value::Array(v) => Value::Array(v.iter().map(|i| i.map(change)).collect()),
            Value::Set(v) => Value::Set(v.iter().map(|i| i.map(change)).collect()),
            Value::Map(pairs) => Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.map(change), v.map(change)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn from2(frame: Frame2) -> Value {
    match frame {
        Frame2::SimpleString(s) => Value::Status(String::from_utf8_lossy(&s).into_owned()),
        Frame2::Error(e) => Value::Error(e),
        Frame2::Integer(n) => Value::Int(n),
        Frame2::BulkString(b) => Value::Bulk(b),
        Frame2::Array(v) => Value::Array(v.into_iter().map(from2).collect()),
        Frame2::Null => Value::Null,
    }
}

fn from3(frame: Frame3) -> Value {
    match frame {
        Frame3::BlobString { data, .. } => Value::Bulk(data),
        Frame3::BlobError { data, .. } => Value::Error(String::from_utf8_lossy(&data).into_owned()),
        Frame3::SimpleString { data, .. } => {
            Value::Status(String::from_utf8_lossy(&data).into_owned())
        }
        Frame3::SimpleError { data, .. } => Value::Error(data),
        Frame3::Boolean { data, .. } => Value::Bool(data),
        Frame3::Null => Value::Null,
        Frame3::Number { data, .. } => Value::Int(data),
        Frame3::Double { data, .. } => Value::Double(data),
        Frame3::VerbatimString { data, .. } => Value::Verbatim(data),
        Frame3::Array { data, .. } | Frame3::Push { data, .. } => {
            Value::Array(data.into_iter().map(from3).collect())
        }
        Frame3::Map { data, .. } => Value::Map(
            data.into_iter()
                .map(|(k, v)| (from3(k), from3(v)))
                .collect(),
        ),
        Frame3::Set { data, .. } => Value::Set(data.into_iter().map(from3).collect()),
        other => Value::Error(format!("unexpected frame {other:?}")),
    }
}

/// What a RESP connection runs over: plain TCP or TLS.
pub trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

/// A blocking RESP connection.
pub struct RespClient {
    stream: Box<dyn Transport>,
    /// The TCP socket under it (for read timeouts).
    tcp: TcpStream,
    buf: Vec<u8>,
    /// Decode replies as RESP3 (after `HELLO 3`).
    pub resp3: bool,
}

/// How long a reply may take (blocking reads in scripts wait less).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

impl RespClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> RespClient {
        let stream = TcpStream::connect(addr).expect("connect to the RESP server");
        let tcp = stream.try_clone().expect("clone the socket");
        Self::over(Box::new(stream), tcp)
    }

    /// Connects to `addr` with TLS, trusting the CA certificate `ca`, with
    /// a client certificate if given.
    pub fn connect_tls(
        addr: SocketAddr,
        ca: &std::path::Path,
        client: Option<&crate::pki::Issued>,
    ) -> RespClient {
        let stream = crate::pki::tls_connect(addr, ca, client).expect("TLS client");
        let tcp = stream.sock.try_clone().expect("clone the socket");
        Self::over(Box::new(stream), tcp)
    }

    fn over(stream: Box<dyn Transport>, tcp: TcpStream) -> RespClient {
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        RespClient {
            stream,
            tcp,
            buf: Vec::new(),
            resp3: false,
        }
    }

    /// Sends `args` as one multibulk request, without waiting.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `args` and reads the reply (switching to RESP3 decoding after
    /// a successful `HELLO 3`, back after `HELLO 2` or `RESET`).
    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        let name = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
        let before = self.resp3;
        // A successful HELLO answers in the protocol it asks for; an
        // error reads the same in both.
        if name == "HELLO"
            && let Some(v) = args.get(1)
            && (*v == b"2" || *v == b"3")
        {
            self.resp3 = *v == b"3";
        }
        let reply = self.read_reply().expect("a reply");
        if matches!(reply, Value::Error(_)) {
            self.resp3 = before;
        }
        if name == "RESET" {
            self.resp3 = false;
        }
        reply
    }

    /// `call` with text arguments.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// The next reply; `None` if the server closed the connection.
    pub fn read_reply(&mut self) -> Option<Value> {
        loop {
            if let Some((value, used)) = self.decode() {
                self.buf.drain(..used);
                return Some(value);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a reply failed: {e}"),
            }
        }
    }

    fn decode(&self) -> Option<(Value, usize)> {
        if self.resp3 {
            let decoded = redis_protocol::resp3::decode::complete::decode(&self.buf);
            let (frame, used) = decoded.expect("a valid RESP3 reply")?;
            Some((from3(frame), used))
        } else {
            let decoded = redis_protocol::resp2::decode::decode(&self.buf);
            let (frame, used) = decoded.expect("a valid RESP2 reply")?;
            Some((from2(frame), used))
        }
    }

    /// Whether the server closed the connection (within `within`).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.tcp.set_read_timeout(Some(within)).expect("timeout");
        let mut byte = [0u8; 1];
        // A TLS connection may end with or without close_notify.
        let read = self.stream.read(&mut byte);
        let closed = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.tcp
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("timeout");
        closed
    }
}

/// `args` as a multibulk request.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A `redis-server` process on a free loopback port, without persistence.
pub struct RedisServer {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server`, or prints why the test is skipped and
    /// returns `None` when it is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
        let binary = which("redis-server")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = test;
        Some(RedisServer {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `program` on `PATH`; prints a skip note when absent.
pub fn which(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "note: {program} is not installed; skipping this test (apt-get install -y redis-server)"
        );
    }
    found
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One server's side of a differential run: its connection and the IDs
/// it answered (for placeholders and normalisation).
pub struct Side {
    /// The connection.
    pub client: RespClient,
    /// Stream IDs in order of first appearance in replies.
    ids: Vec<String>,
    seen: HashMap<String, usize>,
}

impl Side {
    /// A side talking to `addr`.
    pub fn new(addr: SocketAddr) -> Side {
        Side {
            client: RespClient::connect(addr),
            ids: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Runs one command of a script: `$ID<n>` in an argument is replaced
    /// by the n-th (from 1) ID this side answered; the reply's generated
    /// IDs are replaced by `<id n>`.
    pub fn run(&mut self, args: &[&str]) -> Value {
        let args: Vec<String> = args.iter().map(|a| self.substitute(a)).collect();
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = self.client.call(&bytes);
        self.normalise(&reply)
    }

    fn substitute(&self, arg: &str) -> String {
        let Some(rest) = arg.strip_prefix("$ID") else {
            return arg.to_owned();
        };
        let (digits, suffix) = rest.split_at(
            rest.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len()),
        );
        let n: usize = digits.parse().expect("a placeholder $ID<n>");
        let id = self
            .ids
            .get(n - 1)
            .unwrap_or_else(|| panic!("no ID number {n} yet"));
        format!("{id}{suffix}")
    }

    fn normalise(&mut self, reply: &Value) -> Value {
        reply.map(&mut |v| {
            let text = match v {
                Value::Bulk(_) | Value::Status(_) => v.text()?,
                _ => return None,
            };
            if !is_generated_id(&text) {
                return None;
            }
            let next = self.ids.len();
            let n = *self.seen.entry(text.clone()).or_insert(next);
            if n == next {
                self.ids.push(text);
            }
            Some(Value::bulk(&format!("<id {}>", n + 1)))
        })
    }
}

/// A stream ID a server generated (its time part is a real clock time),
/// as opposed to one a script gave.
fn is_generated_id(text: &str) -> bool {
    let Some((ms, seq)) = text.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ms) && digits(seq) && ms.parse::<u64>().is_ok_and(|ms| ms > 1_000_000_000_000)
}

/// Runs `script` against both servers, one command at a time, and
/// asserts that the (normalised) replies agree; `tweak` may adjust a
/// reply pair first for a documented difference. Returns Pigeon's replies.
pub fn differential(
    redis: &mut Side,
    pigeon: &mut Side,
    script: &[&[&str]],
    mut tweak: impl FnMut(&[&str], &mut Value, &mut Value),
) -> Vec<Value> {
    let mut answers = Vec::new();
    for command in script {
        let mut expected = redis.run(command);
        let mut got = pigeon.run(command);
        tweak(command, &mut expected, &mut got);
        assert_eq!(
            got, expected,
            "the replies to {command:?} differ (left: Pigeon, right: redis-server)"
        );
        answers.push(got);
    }
    answers
}
