//! [`Cancel`]: one handle that asks a running operation to stop. The binary cancels it on
//! SIGINT or SIGTERM; a lock that can no longer be refreshed cancels the work it protects.
//! A leaf: no I/O, nothing below `ops` needs more than this.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A cloneable stop request. Every clone sees the same state; once cancelled it stays so.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    reason: std::sync::Mutex<Option<String>>,
    notify: Notify,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder to stop; `reason` (for example "interrupted by SIGTERM") is kept
    /// from the first call only.
    pub fn cancel(&self, reason: impl Into<String>) {
        if let Ok(mut slot) = self.inner.reason.lock() {
            if slot.is_none() {
                *slot = Some(reason.into());
            }
        }
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Why the run was cancelled ("canceled" when no reason was given).
    pub fn reason(&self) -> String {
        self.inner
            .reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "canceled".to_string())
    }

    /// Resolves once [`Cancel::cancel`] has been called (at once if it already was).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a cancel between the check and the wait is seen.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// `Err(Error::Canceled)` once cancelled, for loops that check between steps.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Canceled {
                reason: self.reason(),
            })
        } else {
            Ok(())
        }
    }

    /// Sleeps for `d`, or less if cancelled first; `Err(Error::Canceled)` then.
    pub async fn sleep(&self, d: std::time::Duration) -> crate::Result<()> {
        tokio::select! {
            _ = self.cancelled() => self.check(),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn clones_share_one_state_and_the_first_reason() {
        let c = Cancel::new();
        let other = c.clone();
        assert!(!other.is_cancelled());
        assert!(other.check().is_ok());
        let waiter = tokio::spawn(async move { other.cancelled().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.cancel("interrupted by SIGTERM");
        c.cancel("second");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .expect("waiter ran");
        assert_eq!(c.reason(), "interrupted by SIGTERM");
        let err = c.check().unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::Canceled);
        // Already cancelled: resolves at once, and sleeps end early.
        c.cancelled().await;
        let started = std::time::Instant::now();
        assert!(c.sleep(Duration::from_secs(30)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
