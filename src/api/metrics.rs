//! What the HTTP layer counts for the metrics listener: requests by endpoint group and status
//! class, and a latency histogram per group. The labels are a fixed, small set (the group is
//! taken from the path's shape, never from its IDs), so a hostile client cannot grow them;
//! counting a request is a handful of relaxed atomic adds, and nothing at all when metrics
//! are off. (Public for the `metrics` bench, which times it.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Endpoint groups, as label values, in the order of [`Group`].
pub(crate) const GROUPS: [&str; 9] = [
    "client_sync",
    "client_send",
    "client_other",
    "federation_send",
    "federation_other",
    "media",
    "admin",
    "well_known",
    "other",
];

/// Status classes, as label values (`1xx` to `5xx`).
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the latency buckets, in seconds (`+Inf` comes after them). From a
/// millisecond (a cached answer) to two minutes (the longest `/sync` long-poll).
pub(crate) const LATENCY_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

/// The same bounds in microseconds, for comparing without floating point.
const LATENCY_BOUNDS_MICROS: [u64; 14] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    30_000_000,
    120_000_000,
];

/// An endpoint group: an index into [`GROUPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group(usize);

impl Group {
    /// The group of a request path (`r0` and `v3` alike; a path that matches no route
    /// still has a group, usually `other`).
    pub fn of(path: &str) -> Group {
        let index = if let Some(rest) = path.strip_prefix("/_matrix/client/") {
            if rest.starts_with("v1/media/") {
                5
            } else if rest.ends_with("/sync") {
                // `/v3/sync`, `/r0/sync` and simplified sliding sync (MSC4186).
                0
            } else if rest.contains("/send/") || rest.contains("/state/") {
                1
            } else if rest.contains("/admin/") {
                6
            } else {
                2
            }
        } else if path.starts_with("/_matrix/federation/v1/send/") {
            3
        } else if path.starts_with("/_matrix/federation/v1/media/") {
            5
        } else if path.starts_with("/_matrix/federation/") || path.starts_with("/_matrix/key/") {
            4
        } else if path.starts_with("/_matrix/media/") {
            5
        } else if path.starts_with("/_synapse/admin/") {
            6
        } else if path.starts_with("/.well-known/") {
            7
        } else {
            8
        };
        Group(index)
    }

    #[cfg(test)]
    fn name(self) -> &'static str {
        GROUPS[self.0]
    }
}

/// The counts of one group: requests per status class, and the latency histogram (per
/// bucket, not yet cumulative: [`HttpMetrics::latency`] adds them up).
#[derive(Default)]
struct GroupCounts {
    by_status: [AtomicU64; STATUS_CLASSES.len()],
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    micros: AtomicU64,
}

/// A histogram as read at one moment: cumulative bucket counts (the last is `+Inf`, equal
/// to the count), and the sum of the observations in seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramSnapshot {
    pub(crate) cumulative: Vec<u64>,
    pub(crate) sum_seconds: f64,
}

/// Requests counted by group and status class, with latencies.
pub struct HttpMetrics {
    enabled: bool,
    groups: [GroupCounts; GROUPS.len()],
}

impl HttpMetrics {
    /// Counting on (`enabled`) only when the metrics listener is configured.
    pub fn new(enabled: bool) -> HttpMetrics {
        HttpMetrics {
            enabled,
            groups: Default::default(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one answered request: three relaxed atomic adds and a short bucket search.
    pub fn record(&self, group: Group, status: u16, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let counts = &self.groups[group.0];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        counts.by_status[class].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counts.micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Requests of `group` answered with a status of `class` (an index into
    /// [`STATUS_CLASSES`]).
    pub(crate) fn requests(&self, group: usize, class: usize) -> u64 {
        self.groups[group].by_status[class].load(Ordering::Relaxed)
    }

    /// The latency histogram of `group` (an index into [`GROUPS`]).
    pub(crate) fn latency(&self, group: usize) -> HistogramSnapshot {
        let counts = &self.groups[group];
        let mut total = 0;
        let cumulative = counts
            .buckets
            .iter()
            .map(|bucket| {
                total += bucket.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_seconds: counts.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_their_groups() {
        let cases = [
            ("/_matrix/client/v3/sync", "client_sync"),
            ("/_matrix/client/r0/sync", "client_sync"),
            (
                "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
                "client_sync",
            ),
            (
                "/_matrix/client/v3/rooms/!a:b/send/m.room.message/1",
                "client_send",
            ),
            (
                "/_matrix/client/v3/rooms/!a:b/state/m.room.name/",
                "client_send",
            ),
            ("/_matrix/client/v3/login", "client_other"),
            ("/_matrix/client/v1/media/download/a/b", "media"),
            ("/_matrix/media/v3/upload", "media"),
            ("/_matrix/federation/v1/send/txn1", "federation_send"),
            ("/_matrix/federation/v1/media/download/x", "media"),
            (
                "/_matrix/federation/v1/make_join/!a:b/@c:d",
                "federation_other",
            ),
            ("/_matrix/key/v2/server", "federation_other"),
            ("/_synapse/admin/v2/users", "admin"),
            ("/.well-known/matrix/client", "well_known"),
            ("/nothing/here", "other"),
            ("/", "other"),
        ];
        for (path, group) in cases {
            assert_eq!(Group::of(path).name(), group, "{path}");
        }
    }

    #[test]
    fn latencies_land_in_cumulative_buckets() {
        let metrics = HttpMetrics::new(true);
        let group = Group::of("/_matrix/client/v3/login");
        metrics.record(group, 200, Duration::from_micros(500));
        metrics.record(group, 200, Duration::from_micros(1_000));
        metrics.record(group, 404, Duration::from_millis(30));
        metrics.record(group, 503, Duration::from_secs(600));
        let snapshot = metrics.latency(group.0);
        assert_eq!(snapshot.cumulative.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(snapshot.cumulative[0], 2, "≤ 1 ms, the bound included");
        assert_eq!(snapshot.cumulative[5], 3, "≤ 50 ms");
        assert_eq!(snapshot.cumulative[LATENCY_BOUNDS.len() - 1], 3);
        assert_eq!(*snapshot.cumulative.last().expect("+Inf"), 4);
        assert!((snapshot.sum_seconds - 600.0315).abs() < 1e-9);
        assert_eq!(metrics.requests(group.0, 1), 2);
        assert_eq!(metrics.requests(group.0, 3), 1);
        assert_eq!(metrics.requests(group.0, 4), 1);
    }

    #[test]
    fn nothing_is_counted_when_metrics_are_off() {
        let metrics = HttpMetrics::new(false);
        metrics.record(Group::of("/"), 200, Duration::from_millis(1));
        assert_eq!(metrics.requests(8, 1), 0);
        assert_eq!(*metrics.latency(8).cumulative.last().expect("+Inf"), 0);
    }
}
