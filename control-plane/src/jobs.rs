//! Periodic jobs run on one replica at a time: each run first takes the
//! job's lock in the database (a PostgreSQL advisory lock, released when
//! the run ends or the replica dies); a replica that finds it taken skips
//! that run. The jobs are idempotent, so a run skipped here is done there.

use crate::store::{JobLock, Store};

/// The lock of `job` for this run, or `None` when another replica holds it
/// (or the database cannot say; the next tick tries again).
pub async fn lead(store: &dyn Store, job: &str) -> Option<JobLock> {
    match store.job_lock(job).await {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            tracing::debug!(job, "another replica runs this job now");
            None
        }
        Err(error) => {
            tracing::warn!(job, %error, "could not take the job's lock; will retry");
            None
        }
    }
}
