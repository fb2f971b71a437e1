//! Progress lines for work that may run long without saying anything: a
//! migration command, a built-in migration. The waits for Postgres and for
//! the lock say their own (`wait.rs`, `lock.rs`).
//!
//! Needs a future and a way to describe it. Returns the future's output;
//! while it runs, the description is called every [`EVERY`] with the time
//! elapsed, so an operator watching the logs never sees more than 10 s of
//! silence from pgboot.

use std::time::Duration;

use tokio::time::Instant;

/// How often a progress line is logged.
pub const EVERY: Duration = Duration::from_secs(10);

/// Runs `work`; calls `report(elapsed)` every [`EVERY`] until it ends.
pub async fn reporting<T>(work: impl Future<Output = T>, mut report: impl FnMut(Duration)) -> T {
    let start = Instant::now();
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval_at(start + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => report(start.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_period_while_the_work_runs_and_never_after() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let mut seen = Vec::new();
        let out = rt.block_on(async {
            reporting(
                async {
                    tokio::time::sleep(Duration::from_secs(35)).await;
                    "done"
                },
                |d| seen.push(d),
            )
            .await
        });
        assert_eq!(out, "done");
        let secs: Vec<u64> = seen.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [10, 20, 30]);
    }
}
