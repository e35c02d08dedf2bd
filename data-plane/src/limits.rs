//! What a node admits of one environment's traffic: a rate (a GCRA token
//! bucket, `governor`) and a number of requests in flight (a semaphore).
//! Both are per node; with k nodes the fleet admits up to k times each.
//!
//! Admission costs one atomic compare-and-swap per limit on the request
//! path and nothing for an environment without limits (it has no limiter).
//! Limiters live in a registry keyed by workspace and environment, so a
//! config update that keeps an environment's limits keeps its bucket and
//! the requests it has in flight; one that changes them starts afresh.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mockplane_shared::model::environment::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate: a token comes back after `retry_after`.
    Rate {
        per_second: u32,
        burst: u32,
        retry_after: Duration,
    },
    /// As many requests as allowed are in flight.
    Concurrency { max: u32 },
}

/// One environment's limits on this node.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
    clock: DefaultClock,
}

impl Limiter {
    /// `None` when `limits` limit nothing.
    pub fn new(limits: Limits) -> Option<Self> {
        if limits.is_unlimited() {
            return None;
        }
        let rate = limits
            .requests_per_second
            .and_then(NonZeroU32::new)
            .map(|per_second| {
                let burst = limits
                    .burst_size()
                    .and_then(NonZeroU32::new)
                    .unwrap_or(per_second);
                RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
            });
        let in_flight = limits
            .max_concurrent
            .map(|max| Arc::new(Semaphore::new(max as usize)));
        Some(Self {
            limits,
            rate,
            in_flight,
            clock: DefaultClock::default(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits a request, or says which limit refused it. The permit (when
    /// concurrency is limited) counts the request in flight until dropped.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        // Concurrency first: a request refused for it takes no token.
        let permit = match &self.in_flight {
            None => None,
            Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(Refusal::Concurrency {
                        max: self.limits.max_concurrent.unwrap_or(0),
                    });
                }
            },
        };
        if let Some(rate) = &self.rate
            && let Err(not_until) = rate.check()
        {
            return Err(Refusal::Rate {
                per_second: self.limits.requests_per_second.unwrap_or(0),
                burst: self.limits.burst_size().unwrap_or(0),
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(permit)
    }
}

/// A workspace's environment, by id and name.
type EnvironmentKey = (Uuid, Arc<str>);

/// Every environment's limiter on this node, shared by the routing tables
/// it builds. Locked when compiling, never on the request path.
#[derive(Debug, Default)]
pub struct Limiters {
    by_environment: Mutex<HashMap<EnvironmentKey, Arc<Limiter>>>,
}

impl Limiters {
    /// The limiter of an environment with these limits (compile time): the
    /// one it had when its limits are the same, else a new one; `None`
    /// when they limit nothing.
    pub fn environment(
        &self,
        workspace: Uuid,
        name: &Arc<str>,
        limits: Limits,
    ) -> Option<Arc<Limiter>> {
        let mut map = self
            .by_environment
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (workspace, name.clone());
        if let Some(existing) = map.get(&key)
            && existing.limits == limits
        {
            return Some(existing.clone());
        }
        match Limiter::new(limits) {
            None => {
                map.remove(&key);
                None
            }
            Some(limiter) => {
                let limiter = Arc::new(limiter);
                map.insert(key, limiter.clone());
                Some(limiter)
            }
        }
    }

    /// Forgets the limiters no compiled environment holds any more.
    pub fn forget_unused(&self) {
        self.by_environment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, limiter| Arc::strong_count(limiter) > 1);
    }

    pub fn len(&self) -> usize {
        self.by_environment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: Option<u32>, burst: Option<u32>, max: Option<u32>) -> Limits {
        Limits {
            requests_per_second: rate,
            burst,
            max_concurrent: max,
        }
    }

    #[test]
    fn no_limits_no_limiter() {
        assert!(Limiter::new(Limits::default()).is_none());
    }

    #[test]
    fn the_rate_admits_its_burst_then_says_when_to_retry() {
        let limiter = Limiter::new(limits(Some(1), Some(3), None)).unwrap();
        for _ in 0..3 {
            assert!(limiter.admit().unwrap().is_none());
        }
        match limiter.admit() {
            Err(Refusal::Rate {
                per_second: 1,
                burst: 3,
                retry_after,
            }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrency_counts_requests_until_their_permit_drops() {
        let limiter = Limiter::new(limits(None, None, Some(2))).unwrap();
        let first = limiter.admit().unwrap().unwrap();
        let _second = limiter.admit().unwrap().unwrap();
        assert_eq!(
            limiter.admit().unwrap_err(),
            Refusal::Concurrency { max: 2 }
        );
        drop(first);
        assert!(limiter.admit().unwrap().is_some());
    }

    #[test]
    fn a_concurrency_refusal_takes_no_token() {
        let limiter = Limiter::new(limits(Some(1), Some(1), Some(1))).unwrap();
        let held = limiter.admit().unwrap();
        assert!(matches!(limiter.admit(), Err(Refusal::Concurrency { .. })));
        drop(held);
        // The one token went to the first request; the refused one took none.
        assert!(matches!(limiter.admit(), Err(Refusal::Rate { .. })));
    }

    #[test]
    fn the_registry_keeps_a_limiter_while_its_limits_stay() {
        let limiters = Limiters::default();
        let ws = Uuid::new_v4();
        let env: Arc<str> = "prod".into();
        let first = limiters
            .environment(ws, &env, limits(Some(5), None, None))
            .unwrap();
        let same = limiters
            .environment(ws, &env, limits(Some(5), None, None))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        let changed = limiters
            .environment(ws, &env, limits(Some(6), None, None))
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(limiters.environment(ws, &env, Limits::default()).is_none());
        assert!(limiters.is_empty());
        let kept = limiters
            .environment(ws, &env, limits(None, None, Some(1)))
            .unwrap();
        limiters.forget_unused();
        assert_eq!(limiters.len(), 1);
        drop(kept);
        limiters.forget_unused();
        assert!(limiters.is_empty());
    }
}
