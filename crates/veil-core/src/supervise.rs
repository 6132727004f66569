//! Retrying a long-running service (`veil stream`, `veil sink`) after a transient error: in
//! process, with exponential backoff and jitter (1 s doubling to 60 s, ±25 %), the attempt count
//! reset once a run stayed up for a while — so an outage of the broker, dev or production is
//! ridden out without a supervisor and without a retry storm. Definite and usage errors stop at
//! once (retrying fails the same way); `max_retries` gives up after that many consecutive
//! transient failures (exit 75 for the supervisor). Each retry counts in `veil_restarts_total`.

use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::error::{Classify, ErrorClass};

/// When and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Consecutive transient failures tolerated (`None`: retry for ever).
    pub max_retries: Option<u32>,
    /// A run that lasted this long was healthy: the next failure starts the backoff over.
    pub healthy_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_retries: None,
            healthy_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Runs `run` until it succeeds, fails definitely, the retries are used up, or `shutdown`
/// turns true (during a wait: an orderly stop, `Ok`).
pub async fn with_retries<E, F, Fut>(
    component: &'static str,
    policy: RetryPolicy,
    mut shutdown: watch::Receiver<bool>,
    mut run: F,
) -> Result<(), E>
where
    E: Classify + std::fmt::Display,
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        let e = match run(shutdown.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if e.class() != ErrorClass::Transient || *shutdown.borrow() {
            return Err(e);
        }
        if started.elapsed() >= policy.healthy_after {
            attempt = 0;
        }
        attempt += 1;
        if policy.max_retries.is_some_and(|m| attempt > m) {
            return Err(e);
        }
        let base = policy.delay(attempt);
        let wait = base.mul_f64(0.75 + jitter() * 0.5);
        metrics::counter!(crate::metrics::RESTARTS, "component" => component).increment(1);
        tracing::warn!(component, error = %e, attempt, retry_in_secs = format!("{:.1}", wait.as_secs_f64()),
            "transient error; retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            tracing::info!(component, "stopped while waiting to retry");
            return Ok(());
        }
    }
}

/// A number in [0, 1) that differs between processes and calls (clock nanoseconds): enough to
/// keep several restarted processes from retrying in step.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(ErrorClass);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0.name())
        }
    }
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn quick(max_retries: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            max_retries,
            healthy_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=9).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_definite_ones_stop_at_once() {
        let (_tx, rx) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let r = with_retries("t", quick(None), rx.clone(), |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(E(ErrorClass::Transient))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let r = with_retries("t", quick(None), rx.clone(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(E(ErrorClass::Definite)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let r = with_retries("t", quick(Some(2)), rx, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(E(ErrorClass::Transient)) }
        })
        .await;
        assert_eq!(r.unwrap_err().0, ErrorClass::Transient);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the first run and two retries"
        );
    }

    #[tokio::test]
    async fn a_shutdown_during_the_wait_is_an_orderly_stop() {
        let (tx, rx) = watch::channel(false);
        let slow = RetryPolicy {
            initial: Duration::from_secs(3600),
            ..quick(None)
        };
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(true).unwrap();
        });
        let r = with_retries("t", slow, rx, |_| async {
            Err::<(), _>(E(ErrorClass::Transient))
        })
        .await;
        assert!(r.is_ok());
        stop.await.unwrap();
    }
}
