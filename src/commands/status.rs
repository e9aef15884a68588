//! Live progress of a backup or restore as restic shows it: on a terminal one status line
//! redrawn in place; otherwise a plain line every 10 s; with `--json` restic's `status`
//! messages on stdout. `RESTIC_PROGRESS_FPS` sets the rate; `-q` prints none. The numbers
//! come from `mover::progress::Report`, as a Kubernetes run's status does.

use super::output::{human_bytes, human_duration};
use mover::progress::{Progress, Report, Totals};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a status is shown: `RESTIC_PROGRESS_FPS` when set, else 4 times a second on a
/// terminal and every 10 s elsewhere (a log file keeps every line).
pub fn interval(tty: bool, fps: Option<&str>) -> Duration {
    match fps.and_then(|f| f.trim().parse::<f64>().ok()) {
        Some(f) if f > 0.0 && f.is_finite() => Duration::from_secs_f64((1.0 / f).max(0.016)),
        _ if tty => Duration::from_millis(250),
        _ => Duration::from_secs(10),
    }
}

/// restic's `status` message (`message_type` "status"), fields as restic names them.
pub fn status_json(r: &Report) -> serde_json::Value {
    let mut m = serde_json::json!({
        "message_type": "status",
        "seconds_elapsed": r.seconds_elapsed,
        "percent_done": r.fraction_done.unwrap_or(0.0),
        "files_done": r.files_done,
        "bytes_done": r.bytes_done,
        "error_count": r.errors,
    });
    let o = m.as_object_mut().expect("an object");
    if let Some(s) = r.seconds_remaining {
        o.insert("seconds_remaining".into(), s.into());
    }
    if let Some(t) = r.total_files {
        o.insert("total_files".into(), t.into());
    }
    if let Some(t) = r.total_bytes {
        o.insert("total_bytes".into(), t.into());
    }
    m
}

/// restic's status line: `[0:12] 45.67%  1234 files 1.234 GiB, total 4000 files 2.812 GiB,
/// 0 errors ETA 0:15`.
pub fn status_line(r: &Report) -> String {
    let mut line = format!("[{}]", human_duration(r.seconds_elapsed as f64));
    if let Some(f) = r.fraction_done {
        line.push_str(&format!(" {:.2}%", f * 100.0));
    }
    line.push_str(&format!(
        "  {} files {}",
        r.files_done,
        human_bytes(r.bytes_done)
    ));
    if let (Some(files), Some(bytes)) = (r.total_files, r.total_bytes) {
        line.push_str(&format!(", total {files} files {}", human_bytes(bytes)));
    }
    line.push_str(&format!(", {} errors", r.errors));
    if let Some(s) = r.seconds_remaining {
        line.push_str(&format!(" ETA {}", human_duration(s as f64)));
    }
    line
}

/// A running status display; [`Reporter::stop`] ends it and clears a redrawn line.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    redraws: bool,
}

impl Reporter {
    pub fn start(progress: Arc<Progress>, totals: Arc<Totals>, json: bool, quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let redraws = tty && !json && !quiet;
        let every = interval(tty, std::env::var("RESTIC_PROGRESS_FPS").ok().as_deref());
        let task = tokio::spawn(async move {
            if quiet {
                return;
            }
            let started = Instant::now();
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let r = Report::new(&progress.snapshot(), &totals, started.elapsed());
                if json {
                    println!("{}", status_json(&r));
                } else if redraws {
                    eprint!("\r\x1b[2K{}", status_line(&r));
                } else {
                    eprintln!("{}", status_line(&r));
                }
            }
        });
        Reporter { task, redraws }
    }

    pub fn stop(self) {
        self.task.abort();
        if self.redraws {
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_carry_restic_s_fields() {
        let p = Progress::default();
        p.add_file(300);
        let r = Report::new(
            &p.snapshot(),
            &Totals::known(4, 1200),
            Duration::from_secs(3),
        );
        let j = status_json(&r);
        assert_eq!(j["message_type"], "status");
        assert_eq!(j["percent_done"], 0.25);
        assert_eq!(j["total_files"], 4);
        assert_eq!(j["total_bytes"], 1200);
        assert_eq!(j["files_done"], 1);
        assert_eq!(j["bytes_done"], 300);
        assert_eq!(j["seconds_remaining"], 9);
        assert_eq!(
            status_line(&r),
            "[0:03] 25.00%  1 files 300 B, total 4 files 1.172 KiB, 0 errors ETA 0:09"
        );
        let unknown = Report::new(&p.snapshot(), &Totals::default(), Duration::from_secs(3));
        assert!(status_json(&unknown).get("total_bytes").is_none());
        assert_eq!(status_line(&unknown), "[0:03]  1 files 300 B, 0 errors");
    }

    #[test]
    fn the_rate_follows_restic_progress_fps() {
        assert_eq!(interval(false, None), Duration::from_secs(10));
        assert_eq!(interval(true, None), Duration::from_millis(250));
        assert_eq!(interval(false, Some("2")), Duration::from_millis(500));
        assert_eq!(interval(true, Some("0")), Duration::from_millis(250));
        assert_eq!(interval(false, Some("x")), Duration::from_secs(10));
    }
}
