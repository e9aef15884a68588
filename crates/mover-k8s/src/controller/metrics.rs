//! The controller's Prometheus metrics and its `/metrics`, `/healthz` and `/readyz`
//! endpoints, served by a small HTTP/1.1 responder (GET only, one response per connection).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds of the run duration histogram, in seconds.
const BUCKETS: [f64; 10] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct State {
    /// (kind, result) → finished runs.
    runs: BTreeMap<(String, String), u64>,
    /// kind → duration histogram.
    durations: BTreeMap<String, Histogram>,
    /// kind → bytes moved.
    bytes: BTreeMap<String, u64>,
    /// (namespace, source) → time of the last successful backup.
    last_success: BTreeMap<(String, String), f64>,
    /// (kind, namespace/name) → phase, for the phase gauge.
    phases: BTreeMap<(String, String), String>,
}

/// Everything `/metrics` reports; cheap to update from reconciles.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
    /// Whether this replica holds the Lease and runs the controllers.
    pub leading: AtomicBool,
    /// Whether the API server answered since start.
    pub connected: AtomicBool,
}

impl Metrics {
    pub fn set_phase(&self, kind: &str, object: &str, phase: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.phases
                .insert((kind.to_string(), object.to_string()), phase.to_string());
        }
    }

    pub fn forget_object(&self, kind: &str, object: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.phases.remove(&(kind.to_string(), object.to_string()));
        }
    }

    /// Counts a finished run.
    pub fn run_finished(&self, kind: &str, result: &str, seconds: f64, bytes: u64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        *s.runs
            .entry((kind.to_string(), result.to_string()))
            .or_default() += 1;
        let h = s.durations.entry(kind.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
        *s.bytes.entry(kind.to_string()).or_default() += bytes;
    }

    pub fn backup_succeeded(&self, namespace: &str, source: &str, unix_seconds: f64) {
        if let Ok(mut s) = self.state.lock() {
            s.last_success
                .insert((namespace.to_string(), source.to_string()), unix_seconds);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(s) = self.state.lock() else {
            return out;
        };
        out.push_str("# HELP mover_runs_total Finished runs by kind and result.\n");
        out.push_str("# TYPE mover_runs_total counter\n");
        for ((kind, result), n) in &s.runs {
            let _ = writeln!(
                out,
                "mover_runs_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP mover_run_duration_seconds Duration of finished runs.\n");
        out.push_str("# TYPE mover_run_duration_seconds histogram\n");
        for (kind, h) in &s.durations {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "mover_run_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "mover_run_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "mover_run_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "mover_run_duration_seconds_count{{kind=\"{kind}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP mover_bytes_moved_total Bytes read (backup) or written (restore).\n");
        out.push_str("# TYPE mover_bytes_moved_total counter\n");
        for (kind, n) in &s.bytes {
            let _ = writeln!(out, "mover_bytes_moved_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str(
            "# HELP mover_last_success_timestamp_seconds Time of the last successful backup of a source.\n",
        );
        out.push_str("# TYPE mover_last_success_timestamp_seconds gauge\n");
        for ((ns, source), t) in &s.last_success {
            let _ = writeln!(
                out,
                "mover_last_success_timestamp_seconds{{namespace=\"{ns}\",source=\"{source}\"}} {t}"
            );
        }
        out.push_str("# HELP mover_runs Runs under way by kind and phase.\n");
        out.push_str("# TYPE mover_runs gauge\n");
        let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ((kind, _), phase) in &s.phases {
            *counts.entry((kind, phase)).or_default() += 1;
        }
        for ((kind, phase), n) in counts {
            let _ = writeln!(out, "mover_runs{{kind=\"{kind}\",phase=\"{phase}\"}} {n}");
        }
        out.push_str("# HELP mover_leader Whether this replica holds the leader Lease.\n");
        out.push_str("# TYPE mover_leader gauge\n");
        let _ = writeln!(
            out,
            "mover_leader {}",
            u8::from(self.leading.load(Ordering::Relaxed))
        );
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (the API server answered)
/// on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" | "/livez" => ("200 OK", "ok\n".to_string()),
                "/readyz" if metrics.connected.load(Ordering::Relaxed) => {
                    ("200 OK", "ok\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "the Kubernetes API has not answered yet\n".to_string(),
                ),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.run_finished("VolumeBackup", "Completed", 20.0, 1000);
        m.backup_succeeded("apps", "data", 1.7e9);
        m.set_phase("VolumeBackup", "apps/a", "InProgress");
        m.set_phase("VolumeBackup", "apps/b", "InProgress");
        let text = m.render();
        assert!(text.contains("mover_runs_total{kind=\"VolumeBackup\",result=\"Completed\"} 1"));
        assert!(
            text.contains("mover_run_duration_seconds_bucket{kind=\"VolumeBackup\",le=\"15\"} 0")
        );
        assert!(
            text.contains("mover_run_duration_seconds_bucket{kind=\"VolumeBackup\",le=\"30\"} 1")
        );
        assert!(text.contains("mover_bytes_moved_total{kind=\"VolumeBackup\"} 1000"));
        assert!(
            text.contains(
                "mover_last_success_timestamp_seconds{namespace=\"apps\",source=\"data\"}"
            )
        );
        assert!(text.contains("mover_runs{kind=\"VolumeBackup\",phase=\"InProgress\"} 2"));
    }
}
