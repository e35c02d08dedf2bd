//! Short forms of settings for table cells.

use mockplane_shared::model::environment::Limits;
use mockplane_shared::model::realism::{Chaos, Latency};

/// A number of milliseconds (or a factor) without needless decimals.
fn number(value: f64) -> String {
    ((value * 1000.0).round() / 1000.0).to_string()
}

/// `normal 80±25ms`: the distribution and its parameters, without bounds.
pub fn latency_summary(latency: &Latency) -> String {
    if let Some(ms) = latency.fixed {
        format!("fixed {ms}ms")
    } else if let Some(u) = latency.uniform {
        format!("uniform {}-{}ms", u.min, u.max)
    } else if let Some(n) = latency.normal {
        format!("normal {}±{}ms", number(n.mean), number(n.stddev))
    } else if let Some(l) = latency.lognormal {
        format!("lognormal {}ms σ{}", number(l.median), number(l.sigma))
    } else if let Some(p) = latency.pareto {
        format!("pareto {}ms α{}", number(p.scale), number(p.shape))
    } else {
        "none".to_owned()
    }
}

/// `1% 500,503`: the share of requests that fail, and how they fail.
pub fn chaos_summary(chaos: &Chaos) -> String {
    let mut outcomes: Vec<String> = chaos.statuses.keys().map(u16::to_string).collect();
    outcomes.extend(chaos.faults.keys().map(|f| f.as_str().to_owned()));
    if outcomes.is_empty() {
        // What chaos without statuses or faults answers.
        outcomes.push("500".to_owned());
    }
    format!("{}% {}", number(chaos.rate * 100.0), outcomes.join(","))
}

/// `100/s burst 200, 50 at once`; `none` when nothing is limited.
pub fn limits_summary(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = limits.requests_per_second {
        match limits.burst {
            Some(burst) if burst != rate => parts.push(format!("{rate}/s burst {burst}")),
            _ => parts.push(format!("{rate}/s")),
        }
    }
    if let Some(max) = limits.max_concurrent {
        parts.push(format!("{max} at once"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}
