//! A moto S3 server on 127.0.0.1 for integration tests (`pip install 'moto[server]'`).
//! One server is shared by all tests of the binary ([`S3Server::shared`]); each test uses
//! its own bucket. [`S3Server::start_tls`] starts one that speaks HTTPS with a certificate
//! made for the test. The server dies with the test process, also when a test panics.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ACCESS_KEY_ID: &str = "mover-test-key";
const SECRET_ACCESS_KEY: &str = "mover-test-secret";
const REGION: &str = "us-east-1";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`, or `https://` for [`S3Server::start_tls`]
    pub endpoint: String,
    pub port: u16,
    child: Child,
    /// Closing this pipe makes the wrapper shell kill moto_server; it closes when the
    /// server is dropped or the test process exits, whichever comes first.
    lifeline: Option<ChildStdin>,
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a certificate for 127.0.0.1 and writes it and its key into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("cannot make a test certificate");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).expect("cannot write cert.pem");
        std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("cannot write key.pem");
        files
    }
}

impl S3Server {
    /// Starts a fresh server on a free port and waits until it answers.
    pub fn start() -> S3Server {
        S3Server::start_with(None)
    }

    /// A fresh server on `port`, for a test that points clients at it before it runs.
    pub fn start_on(port: u16) -> S3Server {
        S3Server::start_at(None, port)
    }

    /// A port that is free now, to start [`S3Server::start_on`] on later.
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port on 127.0.0.1")
            .port()
    }

    /// [`S3Server::start`] speaking HTTPS with the certificate of `tls`. Create buckets with
    /// a client that trusts it (`restic init` creates its bucket); [`S3Server::create_bucket`]
    /// speaks plain HTTP.
    pub fn start_tls(tls: &TlsFiles) -> S3Server {
        S3Server::start_with(Some(tls))
    }

    fn start_with(tls: Option<&TlsFiles>) -> S3Server {
        S3Server::start_at(tls, S3Server::free_port())
    }

    fn start_at(tls: Option<&TlsFiles>, port: u16) -> S3Server {
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
        let tls_args = match tls {
            Some(t) => format!("-c '{}' -k '{}'", t.cert.display(), t.key.display()),
            None => String::new(),
        };
        // The shell keeps moto_server's pid and kills it when its stdin reaches EOF.
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} {tls_args} >/dev/null 2>&1 & pid=$!; \
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = S3Server {
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            port,
            child,
            lifeline,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Over TLS, a listening port is as far as this plain probe can tell.
            let up = match tls {
                Some(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                None => server
                    .request("GET", "/")
                    .is_ok_and(|reply| reply.starts_with("HTTP/")),
            };
            if up {
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
        S3Server::client_env()
    }

    /// [`S3Server::env`] before any server runs (the credentials every server accepts).
    pub fn client_env() -> Vec<(String, String)> {
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

    /// `s3:http(s)://127.0.0.1:PORT/bucket/prefix` (no trailing `/` when `prefix` is empty).
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
