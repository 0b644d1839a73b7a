//! Rate limits (token buckets) for the endpoints that guess passwords or make accounts, per
//! client address and per account. The table of keys is bounded: when full, idle entries are
//! dropped first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const MAX_ADDRESSES: usize = 10_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub(crate) struct RateLimiter<K = IpAddr> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// The key an address is limited by: IPv4 addresses one by one (IPv4-mapped IPv6 too), IPv6
/// addresses by their /64, since one host commonly holds a whole /64.
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute` requests a minute on average, in bursts of up to `burst`.
    pub(crate) fn new(per_minute: u32, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how many milliseconds to wait.
    pub(crate) fn check(&self, key: K) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, address: K, now: Instant) -> Result<(), u64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            let full = self.burst;
            let per_second = self.per_second;
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second < full
            });
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(60_000);
        }
        // Tokens are below 1 and the rate positive here: a small positive number of
        // milliseconds, which the cast keeps whole (a float cast saturates, never wraps).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wait_ms = (((1.0 - bucket.tokens) / self.per_second) * 1000.0).ceil() as u64;
        Err(wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_waits_then_refills() {
        let limiter = RateLimiter::<IpAddr>::new(60, 3);
        let address: IpAddr = [192, 0, 2, 1].into();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(address, start).is_ok());
        }
        let wait = limiter.check_at(address, start).expect_err("limited");
        assert!((900..=1000).contains(&wait), "{wait}");
        assert!(
            limiter
                .check_at(address, start + Duration::from_secs(1))
                .is_ok()
        );
        // Another address has its own bucket.
        assert!(limiter.check_at([192, 0, 2, 2].into(), start).is_ok());
    }

    #[test]
    fn ipv6_hosts_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn the_address_table_stays_bounded() {
        let limiter = RateLimiter::<IpAddr>::new(60, 1);
        let now = Instant::now();
        for i in 0..(u32::try_from(MAX_ADDRESSES).expect("fits") + 100) {
            let _ = limiter.check_at(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limiter.buckets.lock().expect("lock").len() <= MAX_ADDRESSES);
    }
}
