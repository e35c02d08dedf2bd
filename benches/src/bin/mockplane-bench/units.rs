//! How the benchmarks print durations and sizes.

pub fn micros(value: Option<f64>) -> String {
    match value {
        None => "–".into(),
        Some(us) if us >= 1000.0 => format!("{:.2} ms", us / 1000.0),
        Some(us) => format!("{us:.0} µs"),
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}
