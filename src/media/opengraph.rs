//! OpenGraph from the `<head>` of an HTML page, read as it arrives: `<meta property="og:…"
//! content="…">` tags, with `<title>` and `<meta name="description">` standing in for a
//! missing `og:title` and `og:description`. No HTML parser: a preview needs a handful of tags
//! from the first kilobytes of a page, and the scan stops at `</head>` or `<body>`, so a
//! page's size does not matter. Comments, scripts and styles are skipped whole. Bounded:
//! a tag longer than [`MAX_TAG`] is dropped unread, at most [`MAX_PROPERTIES`] properties
//! are kept, each value cut at [`MAX_VALUE_CHARS`].

use serde_json::{Map, Value};

/// The longest tag (or title text) kept in the buffer while waiting for its end.
const MAX_TAG: usize = 16 * 1024;
/// The most properties one page may give.
const MAX_PROPERTIES: usize = 32;
/// The longest value kept, in characters.
const MAX_VALUE_CHARS: usize = 1000;

/// The scan of one page.
#[derive(Default)]
pub(crate) struct Scanner {
    /// Bytes received and not yet understood (an unfinished tag).
    pending: Vec<u8>,
    /// Bytes to skip until this closing text is seen (`-->`, `</script`, `</style`).
    skipping_until: Option<&'static [u8]>,
    in_title: bool,
    title: String,
    description: Option<String>,
    properties: Map<String, Value>,
    done: bool,
}

impl Scanner {
    /// Whether the head has ended: nothing more to read.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes of the page.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while !self.done {
            match self.step(at) {
                Some(next) => at = next,
                None => break,
            }
        }
        self.pending.drain(..at.min(self.pending.len()));
        if self.pending.len() > MAX_TAG {
            // An endless tag or title: forget it rather than hold the page.
            self.pending.clear();
            self.skipping_until = None;
            self.in_title = false;
        }
    }

    /// What was found: `og:*` properties (images left out: a preview's `og:image` must be
    /// an `mxc://` URI, and we do not store other sites' images), then the stand-ins.
    pub(crate) fn finish(mut self) -> Map<String, Value> {
        let title = collapse_spaces(&decode_entities(&self.title));
        if !self.properties.contains_key("og:title") && !title.is_empty() {
            self.properties
                .insert("og:title".into(), Value::String(cut(&title)));
        }
        if let Some(description) = self.description.take() {
            self.properties
                .entry("og:description")
                .or_insert(Value::String(description));
        }
        self.properties
    }

    /// Understands what starts at `at` in `pending`; the position after it, or `None` when
    /// more bytes are needed.
    fn step(&mut self, at: usize) -> Option<usize> {
        let rest = &self.pending[at..];
        if let Some(end) = self.skipping_until {
            let Some(found) = find_ignoring_case(rest, end) else {
                // Skipped bytes are not kept: only what could begin the end is.
                let keep = end.len() - 1;
                return (rest.len() > keep).then(|| at + rest.len() - keep);
            };
            self.skipping_until = None;
            return Some(at + found + end.len());
        }
        if self.in_title {
            let found = find_ignoring_case(rest, b"</title")?;
            self.title
                .push_str(&String::from_utf8_lossy(&rest[..found]));
            self.in_title = false;
            return Some(at + found);
        }
        let open = match rest.iter().position(|&byte| byte == b'<') {
            Some(open) => open,
            None => {
                return if rest.is_empty() {
                    None
                } else {
                    Some(at + rest.len())
                };
            }
        };
        if open > 0 {
            return Some(at + open);
        }
        let tag = rest;
        if tag.len() < 4 && b"<!--".starts_with(tag) {
            return None;
        }
        if tag.starts_with(b"<!--") {
            self.skipping_until = Some(b"-->");
            return Some(at + 4);
        }
        let close = tag.iter().position(|&byte| byte == b'>')?;
        let inside = String::from_utf8_lossy(&tag[1..close]).into_owned();
        self.tag(&inside);
        Some(at + close + 1)
    }

    /// One tag's text between `<` and `>`.
    fn tag(&mut self, inside: &str) {
        let closing = if inside.starts_with('/') { "/" } else { "" };
        let name: String = inside[closing.len()..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("{closing}{name}");
        match name.as_str() {
            "/head" | "body" => self.done = true,
            "title" => self.in_title = self.title.is_empty(),
            "script" => self.skipping_until = Some(b"</script"),
            "style" => self.skipping_until = Some(b"</style"),
            "meta" => self.meta(&attributes(&inside[name.len()..])),
            _ => {}
        }
    }

    fn meta(&mut self, attributes: &[(String, String)]) {
        let get = |wanted: &str| {
            attributes
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.as_str())
        };
        let Some(content) = get("content") else {
            return;
        };
        let content = cut(&collapse_spaces(&decode_entities(content)));
        let key = get("property").or_else(|| get("name")).unwrap_or("");
        let key = key.trim().to_ascii_lowercase();
        if key == "description" {
            self.description.get_or_insert(content);
        } else if key.starts_with("og:")
            && !key.starts_with("og:image")
            && key.len() <= 64
            && self.properties.len() < MAX_PROPERTIES
        {
            self.properties.entry(key).or_insert(Value::String(content));
        }
    }
}

/// `name="value"`, `name='value'`, `name=value` and bare `name` pairs, names lower-cased.
fn attributes(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (text, remaining) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(quote).unwrap_or(body.len());
                    (&body[..end], body.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            value = text.to_owned();
            rest = remaining;
        }
        if !name.is_empty() {
            found.push((name, value));
        }
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
    }
    found
}

/// The common character references (`&amp;`, `&#39;`, `&#x27;`, …); others are kept as
/// written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(';').filter(|end| *end <= 10);
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_VALUE_CHARS).collect()
}

fn find_ignoring_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(page: &str, piece: usize) -> Map<String, Value> {
        let mut scanner = Scanner::default();
        for chunk in page.as_bytes().chunks(piece) {
            scanner.feed(chunk);
        }
        scanner.finish()
    }

    const PAGE: &str = r#"<!doctype html><html><head>
        <title>Fallback  title</title>
        <!-- <meta property="og:title" content="in a comment"> -->
        <script>if (a > b) { document.write('<meta property="og:type" content="x">') }</script>
        <meta property="og:title" content="Tom &amp; Jerry&#39;s &#x1F600;">
        <meta content='A site' property='og:site_name' />
        <meta name="description" content="  the   description ">
        <meta property="og:image" content="https://example.org/a.png">
        </head><body><meta property="og:url" content="too late"></body></html>"#;

    #[test]
    fn open_graph_from_the_head_only_whatever_the_pieces() {
        for piece in [1, 3, 7, 64, PAGE.len()] {
            let found = scan_in_pieces(PAGE, piece);
            assert_eq!(
                found["og:title"], "Tom & Jerry's \u{1F600}",
                "piece {piece}"
            );
            assert_eq!(found["og:site_name"], "A site");
            assert_eq!(found["og:description"], "the description");
            assert!(!found.contains_key("og:image"), "images are left out");
            assert!(!found.contains_key("og:url"), "the body is not read");
            assert!(!found.contains_key("og:type"), "scripts are skipped");
        }
    }

    #[test]
    fn the_title_stands_in_for_og_title() {
        let found = scan_in_pieces("<head><title>Just a\n title</title></head>", 5);
        assert_eq!(found["og:title"], "Just a title");
    }

    #[test]
    fn the_scan_stops_at_the_body() {
        let mut scanner = Scanner::default();
        scanner.feed(b"<html><head><meta property=og:title content=Bare></head>");
        assert!(scanner.is_done());
        assert_eq!(scanner.finish()["og:title"], "Bare");
    }

    #[test]
    fn long_comments_are_skipped_without_being_kept() {
        let mut scanner = Scanner::default();
        scanner.feed(b"<head><!--");
        for _ in 0..100 {
            scanner.feed(&[b'x'; 1024]);
            assert!(scanner.pending.len() < 8);
        }
        scanner.feed(b"--><meta property=\"og:title\" content=\"after\"></head>");
        assert_eq!(scanner.finish()["og:title"], "after");
    }

    #[test]
    fn endless_tags_are_dropped_not_kept() {
        let mut scanner = Scanner::default();
        scanner.feed(b"<head><meta content=\"");
        for _ in 0..100 {
            scanner.feed(&[b'a'; 1024]);
        }
        assert!(scanner.pending.len() <= MAX_TAG);
        scanner.feed(b"\"><meta property=\"og:title\" content=\"after\"></head>");
        assert!(scanner.finish().len() <= 1);
    }
}
