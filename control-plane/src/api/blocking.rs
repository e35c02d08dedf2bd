//! CPU-heavy request work — parsing a document, converting a large batch of
//! routes — runs here, on tokio's blocking threads, never on the async
//! workers that answer every other call. A semaphore sized to the machine's
//! cores bounds how many run at once, so a flood of large requests queues
//! here instead of taking every thread (or the CPU) from the rest of the
//! API.

use std::sync::LazyLock;

use tokio::sync::Semaphore;
use tonic::Status;

static PERMITS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Runs `work` off the async workers, at most one per core at a time.
pub async fn run<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _permit = PERMITS
        .acquire()
        .await
        .map_err(|_| Status::unavailable("the server is shutting down"))?;
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "a request's parse task failed");
        Status::internal("internal error")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a runtime with a single async thread, a parse that does not
    /// finish leaves that thread free: other calls complete before it.
    #[tokio::test(flavor = "current_thread")]
    async fn other_calls_complete_while_a_parse_runs() {
        let (release, parked) = std::sync::mpsc::channel::<()>();
        let parse = tokio::spawn(run(move || {
            parked.recv().ok();
            "parsed"
        }));
        tokio::task::yield_now().await;
        let unrelated = tokio::spawn(async { "answered" }).await.unwrap();
        assert_eq!(unrelated, "answered");
        assert!(!parse.is_finished(), "the parse cannot have finished yet");
        release.send(()).unwrap();
        assert_eq!(parse.await.unwrap().unwrap(), "parsed");
    }

    /// More parses than cores queue for a permit instead of running at once.
    #[tokio::test(flavor = "current_thread")]
    async fn parses_beyond_the_permits_wait() {
        let cores = PERMITS.available_permits();
        let (release, parked) = std::sync::mpsc::channel::<()>();
        let parked = std::sync::Arc::new(std::sync::Mutex::new(parked));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let mut parses = Vec::new();
        for _ in 0..cores + 1 {
            let parked = parked.clone();
            let started_tx = started_tx.clone();
            parses.push(tokio::spawn(run(move || {
                started_tx.send(()).unwrap();
                parked.lock().unwrap().recv().ok();
            })));
        }
        for _ in 0..cores {
            started.recv().await.unwrap();
        }
        tokio::task::yield_now().await;
        assert_eq!(PERMITS.available_permits(), 0);
        assert!(
            started.try_recv().is_err(),
            "one parse more than the cores ran"
        );
        for _ in 0..=cores {
            release.send(()).unwrap();
        }
        for parse in parses {
            parse.await.unwrap().unwrap();
        }
    }
}
