//! Latency and chaos: how far a route's answers are from instant and
//! perfect. Sampled per request from a seeded generator, so a run with a
//! seed is reproducible.
//!
//! File form:
//!
//! ```yaml
//! latency: { fixed: 50 }                                  # milliseconds
//! latency: { uniform: { min: 10, max: 100 } }
//! latency: { normal: { mean: 100, stddev: 20 }, min: 10, max: 500 }
//! latency: { lognormal: { median: 80, sigma: 0.5 }, max: 2000 }
//! latency: { pareto: { scale: 20, shape: 1.5 }, max: 5000 }
//! chaos: { rate: 0.1, statuses: { 503: 3, 500: 1 }, faults: { reset: 1, truncated: 1 }, seed: 42 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest delay a route may ask for.
pub const MAX_DELAY_MS: u32 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uniform {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normal {
    pub mean: f64,
    pub stddev: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNormal {
    pub median: f64,
    pub sigma: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pareto {
    pub scale: f64,
    pub shape: f64,
}

/// A latency distribution in milliseconds, clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform: Option<Uniform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<Normal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lognormal: Option<LogNormal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto: Option<Pareto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

impl Latency {
    pub fn check(&self) -> Result<(), String> {
        let given = [
            self.fixed.is_some(),
            self.uniform.is_some(),
            self.normal.is_some(),
            self.lognormal.is_some(),
            self.pareto.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if given != 1 {
            return Err("give exactly one of fixed, uniform, normal, lognormal or pareto".into());
        }
        let bounded = |what: &str, ms: f64| {
            if ms.is_finite() && (0.0..=f64::from(MAX_DELAY_MS)).contains(&ms) {
                Ok(())
            } else {
                Err(format!("{what} must be 0 to {MAX_DELAY_MS} ms, got {ms}"))
            }
        };
        let positive = |what: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be above 0 and at most 100, got {value}"
                ))
            }
        };
        if let Some(ms) = self.fixed {
            bounded("fixed", f64::from(ms))?;
        }
        if let Some(u) = self.uniform {
            bounded("uniform.min", f64::from(u.min))?;
            bounded("uniform.max", f64::from(u.max))?;
            if u.min > u.max {
                return Err(format!(
                    "uniform.min {} is above uniform.max {}",
                    u.min, u.max
                ));
            }
        }
        if let Some(n) = self.normal {
            bounded("normal.mean", n.mean)?;
            bounded("normal.stddev", n.stddev)?;
        }
        if let Some(l) = self.lognormal {
            bounded("lognormal.median", l.median)?;
            positive("lognormal.sigma", l.sigma)?;
        }
        if let Some(p) = self.pareto {
            bounded("pareto.scale", p.scale)?;
            positive("pareto.shape", p.shape)?;
        }
        for (what, value) in [("min", self.min), ("max", self.max)] {
            if let Some(ms) = value {
                bounded(what, f64::from(ms))?;
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("min {min} is above max {max}"));
        }
        Ok(())
    }

    /// One delay.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        let ms = if let Some(ms) = self.fixed {
            f64::from(ms)
        } else if let Some(u) = self.uniform {
            f64::from(u.min) + rng.unit() * f64::from(u.max - u.min)
        } else if let Some(n) = self.normal {
            n.mean + n.stddev * rng.gaussian()
        } else if let Some(l) = self.lognormal {
            l.median * (l.sigma * rng.gaussian()).exp()
        } else if let Some(p) = self.pareto {
            // Inverse transform: scale / U^(1/shape), U in (0, 1].
            p.scale / (1.0 - rng.unit()).powf(1.0 / p.shape)
        } else {
            0.0
        };
        let min = f64::from(self.min.unwrap_or(0));
        let max = f64::from(self.max.unwrap_or(MAX_DELAY_MS).min(MAX_DELAY_MS));
        // A degenerate draw (pareto with scale 0 and a tiny shape gives 0/0)
        // is the shortest delay, never a panic.
        let ms = if ms.is_nan() { min } else { ms };
        Duration::from_secs_f64(ms.clamp(min, max.max(min)) / 1000.0)
    }
}

/// What a chaos error does instead of the mock's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The connection is closed without a response.
    Reset,
    /// A response header and no body at all, then the connection closes.
    Empty,
    /// The header promises the whole body; half of it is sent, then the
    /// connection closes.
    Truncated,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::Empty => "empty",
            Fault::Truncated => "truncated",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "reset" => Ok(Fault::Reset),
            "empty" => Ok(Fault::Empty),
            "truncated" => Ok(Fault::Truncated),
            other => Err(format!(
                "unknown fault {other:?}; use reset, empty or truncated"
            )),
        }
    }
}

/// A share of requests answered with an error instead of the mock.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// 0 to 1: the share of requests that get an error.
    pub rate: f64,
    /// Error statuses and their weights; `{500: 1}` when neither this nor
    /// `faults` is given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<u16, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<Fault, u32>,
    /// Makes the sequence of decisions on a node the same on every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// What chaos decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    Status(u16),
    Fault(Fault),
}

impl Chaos {
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && (0.0..=1.0).contains(&self.rate)) {
            return Err(format!("rate must be from 0 to 1, got {}", self.rate));
        }
        for (status, weight) in &self.statuses {
            if !(400..=599).contains(status) {
                return Err(format!(
                    "statuses: {status} is not an error status (400-599)"
                ));
            }
            if *weight == 0 || *weight > 1_000_000 {
                return Err(format!("statuses: weight of {status} must be 1 to 1000000"));
            }
        }
        for (fault, weight) in &self.faults {
            if *weight == 0 || *weight > 1_000_000 {
                return Err(format!(
                    "faults: weight of {} must be 1 to 1000000",
                    fault.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Decides one request.
    pub fn decide(&self, rng: &mut Rng) -> Outcome {
        if self.rate <= 0.0 || rng.unit() >= self.rate {
            return Outcome::Answer;
        }
        let total: u64 = self
            .statuses
            .values()
            .chain(self.faults.values())
            .map(|w| u64::from(*w))
            .sum();
        if total == 0 {
            return Outcome::Status(500);
        }
        let mut pick = rng.next_u64() % total;
        for (status, weight) in &self.statuses {
            if pick < u64::from(*weight) {
                return Outcome::Status(*status);
            }
            pick -= u64::from(*weight);
        }
        for (fault, weight) in &self.faults {
            if pick < u64::from(*weight) {
                return Outcome::Fault(*fault);
            }
            pick -= u64::from(*weight);
        }
        Outcome::Status(500)
    }
}

/// A route's latency and chaos.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Realism {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
}

impl Realism {
    pub fn is_empty(&self) -> bool {
        self.latency.is_none() && self.chaos.is_none()
    }

    pub fn check(&self) -> Result<(), crate::FieldError> {
        if let Some(latency) = &self.latency {
            latency
                .check()
                .map_err(|e| crate::FieldError::new("latency", e))?;
        }
        if let Some(chaos) = &self.chaos {
            chaos
                .check()
                .map_err(|e| crate::FieldError::new("chaos", e))?;
        }
        Ok(())
    }
}

// f64 fields: equality only compares specs (checked values are finite),
// never keys a map.
impl Eq for Realism {}
impl Eq for Latency {}
impl Eq for Chaos {}

/// SplitMix64 with the helpers the distributions need.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator for the `index`-th decision of a stream seeded with
    /// `seed`: decisions are a function of (seed, index) alone.
    pub fn at(seed: u64, index: u64) -> Self {
        let mut rng = Self(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One element of a non-empty list.
    pub fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next_u64() % list.len() as u64) as usize]
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(latency: &Latency, n: usize) -> Vec<f64> {
        latency.check().unwrap();
        (0..n as u64)
            .map(|i| latency.sample(&mut Rng::at(7, i)).as_secs_f64() * 1000.0)
            .collect()
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len() as f64
    }

    fn quantile(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * q) as usize]
    }

    #[test]
    fn distributions_have_their_shape() {
        let n = 20_000;
        let fixed = samples(&serde_json::from_str(r#"{"fixed": 50}"#).unwrap(), 100);
        assert!(fixed.iter().all(|ms| (*ms - 50.0).abs() < 1e-9));

        let uniform = samples(
            &serde_json::from_str(r#"{"uniform": {"min": 10, "max": 30}}"#).unwrap(),
            n,
        );
        assert!(uniform.iter().all(|ms| (10.0..=30.0).contains(ms)));
        assert!((mean(&uniform) - 20.0).abs() < 0.3, "{}", mean(&uniform));

        let normal = samples(
            &serde_json::from_str(r#"{"normal": {"mean": 100, "stddev": 10}}"#).unwrap(),
            n,
        );
        assert!((mean(&normal) - 100.0).abs() < 0.5, "{}", mean(&normal));
        let within = normal
            .iter()
            .filter(|ms| (90.0..=110.0).contains(*ms))
            .count();
        let share = within as f64 / n as f64;
        assert!((share - 0.6827).abs() < 0.015, "one sigma holds {share}");

        let lognormal = samples(
            &serde_json::from_str(r#"{"lognormal": {"median": 80, "sigma": 0.5}}"#).unwrap(),
            n,
        );
        let median = quantile(&lognormal, 0.5);
        assert!((median - 80.0).abs() < 2.5, "median {median}");
        assert!(
            quantile(&lognormal, 0.99) > 2.5 * median,
            "a long right tail"
        );

        let pareto = samples(
            &serde_json::from_str(r#"{"pareto": {"scale": 20, "shape": 2}, "max": 1000}"#).unwrap(),
            n,
        );
        assert!(pareto.iter().all(|ms| (20.0..=1000.0).contains(ms)));
        // P(X > x) = (scale / x)^shape: a quarter above 40 ms.
        let above = pareto.iter().filter(|ms| **ms > 40.0).count() as f64 / n as f64;
        assert!((above - 0.25).abs() < 0.015, "{above}");

        let clamped = samples(
            &serde_json::from_str(
                r#"{"normal": {"mean": 100, "stddev": 50}, "min": 90, "max": 110}"#,
            )
            .unwrap(),
            1000,
        );
        assert!(clamped.iter().all(|ms| (90.0..=110.0).contains(ms)));

        // Edge parameters stay within bounds instead of panicking.
        for json in [
            r#"{"pareto": {"scale": 0, "shape": 1e-300}}"#,
            r#"{"pareto": {"scale": 60000, "shape": 1e-300}}"#,
            r#"{"lognormal": {"median": 60000, "sigma": 100}}"#,
        ] {
            let edge: Latency = serde_json::from_str(json).unwrap();
            for ms in samples(&edge, 1000) {
                assert!(
                    (0.0..=f64::from(MAX_DELAY_MS)).contains(&ms),
                    "{json}: {ms}"
                );
            }
        }
    }

    #[test]
    fn chaos_rates_and_weights_hold_and_seeds_repeat() {
        let chaos: Chaos = serde_json::from_str(
            r#"{"rate": 0.1, "statuses": {"503": 3}, "faults": {"reset": 1}, "seed": 9}"#,
        )
        .unwrap();
        chaos.check().unwrap();
        let n = 50_000u64;
        let decisions: Vec<Outcome> = (0..n).map(|i| chaos.decide(&mut Rng::at(9, i))).collect();
        let errors = decisions.iter().filter(|d| **d != Outcome::Answer).count() as f64;
        assert!(
            (errors / n as f64 - 0.1).abs() < 0.005,
            "{}",
            errors / n as f64
        );
        let resets = decisions
            .iter()
            .filter(|d| **d == Outcome::Fault(Fault::Reset))
            .count() as f64;
        assert!((resets / errors - 0.25).abs() < 0.02, "{}", resets / errors);
        let again: Vec<Outcome> = (0..n).map(|i| chaos.decide(&mut Rng::at(9, i))).collect();
        assert_eq!(decisions, again);
        let plain = Chaos {
            rate: 1.0,
            ..Chaos::default()
        };
        assert_eq!(plain.decide(&mut Rng::new(1)), Outcome::Status(500));
    }

    #[test]
    fn bad_profiles_are_refused() {
        for (json, expect) in [
            (r#"{"latency": {}}"#, "exactly one"),
            (
                r#"{"latency": {"fixed": 1, "uniform": {"min": 1, "max": 2}}}"#,
                "exactly one",
            ),
            (r#"{"latency": {"fixed": 70000}}"#, "0 to 60000"),
            (r#"{"latency": {"uniform": {"min": 5, "max": 1}}}"#, "above"),
            (
                r#"{"latency": {"pareto": {"scale": 5, "shape": 0}}}"#,
                "above 0",
            ),
            (
                r#"{"latency": {"fixed": 5, "min": 9, "max": 1}}"#,
                "above max",
            ),
            (r#"{"chaos": {"rate": 1.5}}"#, "rate"),
            (
                r#"{"chaos": {"rate": 0.1, "statuses": {"200": 1}}}"#,
                "not an error status",
            ),
            (
                r#"{"chaos": {"rate": 0.1, "faults": {"reset": 0}}}"#,
                "weight",
            ),
        ] {
            let realism: Realism = serde_json::from_str(json).unwrap();
            let err = realism.check().unwrap_err().to_string();
            assert!(err.contains(expect), "{json}: {err}");
        }
        assert!(
            serde_json::from_str::<Realism>(r#"{"chaos": {"rate": 0.1, "faults": {"melt": 1}}}"#)
                .is_err()
        );
    }
}
