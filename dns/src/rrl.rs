//! Response rate limiting per client network (/24 for IPv4, /56 for IPv6), as Knot and NSD
//! do it: past `rate` responses in a second, responses are dropped, except every `slip`-th,
//! which goes out truncated (TC) so a real client behind a spoofed flood can retry over TCP.
//!
//! Buckets live in a fixed table indexed by a hash of the network; networks that collide
//! share a bucket, which errs towards limiting, never towards amplification. No locks and
//! no allocation: each bucket is one atomic word holding (second, count).

use std::net::IpAddr;

use ipnet::IpNet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BUCKETS: usize = 1 << 16;

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrlAction {
    /// Under the limit.
    Pass,
    /// Over the limit: send nothing.
    Drop,
    /// Over the limit, but send a truncated answer.
    Slip,
}

/// The limiter.
pub struct Rrl {
    rate: u32,
    slip: u32,
    exempt: Vec<IpNet>,
    start: Instant,
    buckets: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("rate", &self.rate)
            .field("slip", &self.slip)
            .finish()
    }
}

impl Rrl {
    /// At most `rate` responses per second per network; every `slip`-th limited response
    /// slips out truncated (0: never); clients in `exempt` are never limited.
    pub fn new(rate: u32, slip: u32, exempt: Vec<IpNet>) -> Self {
        Rrl {
            rate: rate.max(1),
            slip,
            exempt,
            start: Instant::now(),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one response to `client` and says what to do with it.
    pub fn check(&self, client: IpAddr) -> RrlAction {
        if !self.exempt.is_empty() {
            let plain = match client {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
                v4 => v4,
            };
            if self.exempt.iter().any(|net| net.contains(&plain)) {
                return RrlAction::Pass;
            }
        }
        self.check_at(client, self.start.elapsed().as_secs() as u32)
    }

    /// [`Rrl::check`] at second `now` of the limiter's clock.
    fn check_at(&self, client: IpAddr, now: u32) -> RrlAction {
        let key: u64 = match client {
            IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u64::from(u32::from(v4) >> 8),
                None => ((u128::from(v6) >> 72) as u64) | (1 << 63),
            },
        };
        let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bucket = &self.buckets[(hash >> 48) as usize & (BUCKETS - 1)];
        let mut word = bucket.load(Ordering::Relaxed);
        let count = loop {
            let (second, count) = ((word >> 32) as u32, word as u32);
            let count = if second == now {
                count.saturating_add(1)
            } else {
                1
            };
            let next = (u64::from(now) << 32) | u64::from(count);
            match bucket.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break count,
                Err(actual) => word = actual,
            }
        };
        if count <= self.rate {
            RrlAction::Pass
        } else if self.slip > 0 && (count - self.rate).is_multiple_of(self.slip) {
            RrlAction::Slip
        } else {
            RrlAction::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_network_with_slip() {
        let rrl = Rrl::new(5, 2, Vec::new());
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let same_net: IpAddr = "198.51.100.200".parse().unwrap();
        let other: IpAddr = "203.0.113.1".parse().unwrap();
        let mut actions = Vec::new();
        for i in 0..10 {
            actions.push(rrl.check_at(if i % 2 == 0 { a } else { same_net }, 7));
        }
        assert_eq!(actions[..5], [RrlAction::Pass; 5]);
        assert_eq!(
            actions[5..],
            [
                RrlAction::Drop,
                RrlAction::Slip,
                RrlAction::Drop,
                RrlAction::Slip,
                RrlAction::Drop
            ]
        );
        assert_eq!(rrl.check_at(other, 7), RrlAction::Pass);
        // A new second starts a new count.
        assert_eq!(rrl.check_at(a, 8), RrlAction::Pass);
    }
}
