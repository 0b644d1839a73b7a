//! The clock, as Matrix counts it: milliseconds since the Unix epoch (`origin_server_ts`,
//! `valid_until_ts`, expiry times). One function, so that every timestamp comes from one place.

/// Now, in milliseconds since the Unix epoch; 0 if the system clock is before 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
