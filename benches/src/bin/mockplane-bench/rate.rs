//! Latency at a fixed request rate (open loop), which wrk cannot do.
//!
//! Requests fall due on a fixed schedule, one every `1/rate` seconds, and
//! go out on whichever keep-alive connection is free. A request's latency
//! counts from when it was due, not from when it was sent: when the server
//! stalls and every connection is busy, the requests that pile up are
//! charged for their wait (no coordinated omission).
//!
//! One thread drives every connection with non-blocking sockets and polls
//! without sleeping, so the schedule is kept to microseconds; it is meant
//! to run pinned to a CPU of its own, away from the server.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::procs::Pinning;

#[derive(Debug, Clone, Serialize)]
pub struct RateSample {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub requests: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// When the request in flight was due.
    due: Option<Instant>,
}

/// Sends `rate` requests per second for `duration`, over at most
/// `connections` keep-alive connections, cycling through `paths`.
pub fn run(
    address: SocketAddr,
    paths: &[String],
    rate: f64,
    connections: usize,
    duration: Duration,
    pin: &Pinning,
) -> anyhow::Result<RateSample> {
    let requests: Vec<Vec<u8>> = paths
        .iter()
        .map(|path| format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes())
        .collect();
    let pin = pin.clone();
    std::thread::spawn(move || {
        pin.pin_client_thread();
        drive(address, &requests, rate, connections, duration)
    })
    .join()
    .map_err(|_| anyhow!("the load thread panicked"))?
}

fn drive(
    address: SocketAddr,
    requests: &[Vec<u8>],
    rate: f64,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RateSample> {
    if requests.is_empty() || rate <= 0.0 {
        bail!("nothing to send");
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut pool = Vec::with_capacity(connections);
    for index in 0..connections.max(1) {
        let stream = std::net::TcpStream::connect(address).context("connecting")?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(index), Interest::READABLE)?;
        pool.push(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
            due: None,
        });
    }
    let mut idle: Vec<usize> = (0..pool.len()).collect();
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut sent, mut completed, mut errors) = (0usize, 0u64, 0u64);

    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + duration;
    let mut next_due = start;
    loop {
        let now = Instant::now();
        while next_due <= now && next_due < end {
            pending.push_back(next_due);
            next_due += interval;
        }
        while !pending.is_empty() {
            let Some(index) = idle.pop() else { break };
            let due = pending.pop_front().context("pending")?;
            let connection = &mut pool[index];
            // A request is far smaller than a socket's send buffer.
            connection
                .stream
                .write_all(&requests[sent % requests.len()])?;
            connection.due = Some(due);
            sent += 1;
        }
        if next_due >= end && pending.is_empty() && idle.len() == pool.len() {
            break;
        }
        if now > end + Duration::from_secs(30) {
            bail!(
                "the server stopped answering: {} requests still open",
                pool.len() - idle.len()
            );
        }
        // Keep polling without blocking: an epoll timeout has millisecond
        // granularity, far coarser than the schedule.
        poll.poll(&mut events, Some(Duration::ZERO))?;
        for event in &events {
            let index = event.token().0;
            let connection = &mut pool[index];
            read_available(connection)?;
            while let Some((status, length)) = complete_response(&connection.buffer)? {
                connection.buffer.drain(..length);
                let due = connection
                    .due
                    .take()
                    .context("a response nobody asked for")?;
                let latency = Instant::now().saturating_duration_since(due);
                histogram.saturating_record(
                    u64::try_from(latency.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                completed += 1;
                if !(200..300).contains(&status) {
                    errors += 1;
                }
                idle.push(index);
            }
        }
    }
    Ok(RateSample {
        target_rps: rate,
        achieved_rps: completed as f64 / duration.as_secs_f64(),
        requests: completed,
        errors,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    })
}

fn read_available(connection: &mut Connection) -> anyhow::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match connection.stream.read(&mut chunk) {
            Ok(0) => bail!("the server closed a connection"),
            Ok(read) => connection.buffer.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// The status and total length of the first response in `buffer`, once it
/// is complete (responses carry a content length).
fn complete_response(buffer: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..end]).context("response head is not text")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()?
        .unwrap_or(0);
    let total = end + 4 + length;
    Ok((buffer.len() >= total).then_some((status, total)))
}

#[cfg(test)]
mod tests {
    use super::complete_response;

    #[test]
    fn finds_whole_responses() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404";
        assert_eq!(complete_response(response).unwrap(), Some((200, 40)));
        assert_eq!(complete_response(&response[..39]).unwrap(), None);
        assert_eq!(
            complete_response(b"HTTP/1.1 204 No\r\n\r\n").unwrap(),
            Some((204, 19))
        );
    }
}
