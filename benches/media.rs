//! What media cost, measured: `cargo bench --bench media`.
//!
//! (a) A 64 MiB upload and its download: throughput over loopback, and how far the server's
//! peak resident memory rises above its resident memory just before (goal: at most 8 MiB
//! each; the bytes stream between the socket and the file, never whole in memory).
//!
//! (b) A thumbnail (800×600, scaled) of a 12-megapixel JPEG (4000×3000): the rise of the
//! server's peak resident memory while it is made (goal: at most 64 MiB; the JPEG is decoded
//! already scaled down by its DCT), and the time it takes.
//!
//! The peak is the kernel's `VmHWM`, reset (`/proc/PID/clear_refs`) before each measure.
//! Each figure is printed with its goal and `ok` or `OVER`; a figure over it does not fail
//! the run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::budget::{Report, rss_mib};
use common::{Server, test_config};

const PASSWORD: &str = "correct horse battery";
const BIG: usize = 64 * 1024 * 1024;
const STREAM_GOAL_MIB: f64 = 8.0;
const THUMBNAIL_GOAL_MIB: f64 = 64.0;

/// Resets the peak (`VmHWM`) of `pid` to its current resident memory.
fn reset_peak(pid: u32) {
    if std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_err() {
        eprintln!("note: cannot reset the peak of {pid}; figures include earlier peaks");
    }
}

/// How far the peak rose over the resident memory at `before` (MiB).
fn rise(pid: u32, before: f64) -> f64 {
    (rss_mib(pid, "VmHWM:") - before).max(0.0)
}

fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let pixels: Vec<u8> = (0..u32::from(width) * u32::from(height))
        .flat_map(|i| {
            let (x, y) = (i % u32::from(width), i / u32::from(width));
            [
                x.to_le_bytes()[0],
                y.to_le_bytes()[0],
                (x + y).to_le_bytes()[0],
            ]
        })
        .collect();
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 85)
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .expect("encode jpeg");
    bytes
}

fn upload(server: &Server, token: &str, body: &[u8], content_type: &str) -> String {
    let answer = server
        .client()
        .request(
            "POST",
            "/_matrix/media/v3/upload",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", content_type),
            ],
            Some(body),
        )
        .expect("upload");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let uri = answer.json()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    uri.strip_prefix("mxc://").expect("mxc").to_owned()
}

fn streaming(report: &mut Report, server: &Server, token: &str) {
    let pid = server.child.id();
    // Warm up: the first upload and download touch code and buffers once.
    let small = upload(server, token, &[1; 100_000], "application/octet-stream");
    server
        .client()
        .get_with(&format!("/_matrix/client/v1/media/download/{small}"), token);
    let body: Vec<u8> = (0..BIG).map(|i| (i % 253).to_le_bytes()[0]).collect();

    let before = rss_mib(pid, "VmRSS:");
    reset_peak(pid);
    let started = Instant::now();
    let media = upload(server, token, &body, "application/octet-stream");
    let seconds = started.elapsed().as_secs_f64();
    report.figure("64 MiB upload", format!("{:.0} MiB/s", 64.0 / seconds));
    report.memory_mib(
        "64 MiB upload: peak RSS rise",
        rise(pid, before),
        STREAM_GOAL_MIB,
    );

    let before = rss_mib(pid, "VmRSS:");
    reset_peak(pid);
    let started = Instant::now();
    let answer = server
        .client()
        .get_with(&format!("/_matrix/client/v1/media/download/{media}"), token);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(answer.body.len(), BIG);
    report.figure("64 MiB download", format!("{:.0} MiB/s", 64.0 / seconds));
    report.memory_mib(
        "64 MiB download: peak RSS rise",
        rise(pid, before),
        STREAM_GOAL_MIB,
    );
}

fn thumbnail(report: &mut Report, server: &Server, token: &str) {
    let pid = server.child.id();
    let photo = jpeg(4000, 3000);
    report.figure(
        "12 MP JPEG",
        format!("{:.1} MiB", photo.len() as f64 / 1048576.0),
    );
    let media = upload(server, token, &photo, "image/jpeg");
    let before = rss_mib(pid, "VmRSS:");
    reset_peak(pid);
    let started = Instant::now();
    let answer = server.client().get_with(
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=800&height=600&method=scale"),
        token,
    );
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    report.millis("12 MP JPEG → 800×600 thumbnail", millis, None);
    report.memory_mib(
        "12 MP thumbnail: peak RSS rise",
        rise(pid, before),
        THUMBNAIL_GOAL_MIB,
    );
    let before = rss_mib(pid, "VmRSS:");
    reset_peak(pid);
    let answer = server.client().get_with(
        &format!("/_matrix/client/v1/media/thumbnail/{media}?width=96&height=96&method=crop"),
        token,
    );
    assert_eq!(answer.status, 200);
    report.memory_mib(
        "12 MP thumbnail 96×96 crop: peak rise",
        rise(pid, before),
        THUMBNAIL_GOAL_MIB,
    );
}

fn main() {
    let mut report = Report::new("media: streaming and thumbnails");
    let server = Server::start_with_users(
        &test_config(
            "[media]\nmax_upload_size = 104857600\n[limits]\nbody_timeout_seconds = 120\n",
        ),
        &[("alice", PASSWORD)],
    );
    let token = common::login_token(&server, "alice", PASSWORD);
    report.memory("idle RSS", rss_mib(server.child.id(), "VmRSS:"), None);
    streaming(&mut report, &server, &token);
    thumbnail(&mut report, &server, &token);
    report.finish();
}
