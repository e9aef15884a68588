//! A moto S3 server on 127.0.0.1 for integration tests (`pip install 'moto[server]'`).
//! One server is shared by all tests of the binary ([`S3Server::shared`]); each test uses
//! its own bucket. The server dies with the test process, also when a test panics.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ACCESS_KEY_ID: &str = "mover-test-key";
const SECRET_ACCESS_KEY: &str = "mover-test-secret";
const REGION: &str = "us-east-1";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub port: u16,
    child: Child,
    /// Closing this pipe makes the wrapper shell kill moto_server; it closes when the
    /// server is dropped or the test process exits, whichever comes first.
    lifeline: Option<ChildStdin>,
}

impl S3Server {
    /// Starts a fresh server on a free port and waits until it answers.
    pub fn start() -> S3Server {
        let found = Command::new("sh")
            .args(["-c", "command -v moto_server"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "moto_server not found on PATH; install it with `pip install 'moto[server]'`"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port on 127.0.0.1")
            .port();
        // The shell keeps moto_server's pid and kills it when its stdin reaches EOF.
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; \
             read _ignored; kill $pid 2>/dev/null; wait $pid"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto_server ({e}); install it with `pip install 'moto[server]'`"
                )
            });
        let lifeline = child.stdin.take();
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
            lifeline,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server
                .request("GET", "/")
                .is_ok_and(|reply| reply.starts_with("HTTP/"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {port} did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The server shared by every test in this binary, started on first use.
    pub fn shared() -> &'static S3Server {
        static SERVER: OnceLock<S3Server> = OnceLock::new();
        SERVER.get_or_init(S3Server::start)
    }

    /// Creates a bucket (unsigned request; moto accepts it). Creating it twice is fine.
    pub fn create_bucket(&self, name: &str) {
        let reply = self
            .request("PUT", &format!("/{name}"))
            .unwrap_or_else(|e| panic!("cannot create bucket {name}: {e}"));
        let status = reply.lines().next().unwrap_or_default();
        assert!(
            status.contains(" 200") || reply.contains("BucketAlreadyOwnedByYou"),
            "cannot create bucket {name}: {status}"
        );
    }

    /// Creates a bucket with a name unique in this process, starting with `hint`
    /// (lowercased, non-alphanumerics replaced by `-`).
    pub fn new_bucket(&self, hint: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let mut clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        clean.truncate(40);
        let name = format!("{}-{n}", clean.trim_matches('-'));
        let name = if name.starts_with('-') {
            format!("b{name}")
        } else {
            name
        };
        self.create_bucket(&name);
        name
    }

    /// Environment for a `mover` or `restic` child process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_DEFAULT_REGION", REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Looks up a variable of [`S3Server::env`]; fits `Storage::open_with_env`.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.env()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// `s3:http://127.0.0.1:PORT/bucket/prefix` (no trailing `/` when `prefix` is empty).
    pub fn repo_url(&self, bucket: &str, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3:{}/{bucket}", self.endpoint)
        } else {
            format!("s3:{}/{bucket}/{prefix}", self.endpoint)
        }
    }

    fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}
