//! The test node's kubelet endpoint for `kubectl logs` and for controllers that read pod logs
//! through the API server (VolSync keeps its mover's result from them): the API server proxies
//! `pods/log` to `https://<node InternalIP>:<kubeletEndpoint port>/containerLogs/NS/POD/CONTAINER`,
//! which this serves from the files the node writes. The API server is given no kubelet CA,
//! so it accepts the self-signed certificate made here.

use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Starts serving `logs_dir` (files `NS_POD.log`) on 127.0.0.1 and returns the port.
pub async fn serve(logs_dir: PathBuf) -> u16 {
    mover::k8s::install_crypto_provider();
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate parameters");
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("a TLS server configuration");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let dir = logs_dir.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let target = text.split_whitespace().nth(1).unwrap_or_default();
                let (status, body) = respond(&dir, target);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn respond(dir: &std::path::Path, target: &str) -> (&'static str, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, ..] = parts.as_slice() else {
        return ("404 Not Found", b"only containerLogs is served\n".to_vec());
    };
    let Ok(text) = std::fs::read(dir.join(format!("{ns}_{pod}.log"))) else {
        return (
            "404 Not Found",
            format!("no log of {ns}/{pod}\n").into_bytes(),
        );
    };
    let tail = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("tailLines="))
        .and_then(|n| n.parse::<usize>().ok());
    let body = match tail {
        Some(n) => {
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
        None => text,
    };
    ("200 OK", body)
}
