//! Prometheus' text exposition format, version 0.0.4, written by hand: a family's `# HELP`
//! and `# TYPE` lines, then its samples, `name{label="value",…} number`. Label values and
//! help texts are escaped as the format asks; numbers are integers where they are counts,
//! and `+Inf` is spelled as Prometheus reads it.

use std::fmt::Write as _;

/// The content type of this format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A number as a sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Integer(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Value {
        Value::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Float(value)
    }
}

/// The text of one scrape, built family by family.
#[derive(Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its help text and type. Its samples follow.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Exposition {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the current family.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Into<Value>,
    ) -> &mut Exposition {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        write_value(&mut self.text, value.into());
        self.text.push('\n');
        self
    }

    /// The samples of one histogram of the current family: `_bucket` per bound with the
    /// cumulative counts (`cumulative` has one more entry than `bounds`: `+Inf`, the count),
    /// then `_sum` and `_count`.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
    ) -> &mut Exposition {
        debug_assert_eq!(cumulative.len(), bounds.len() + 1);
        let bucket = format!("{name}_bucket");
        for (index, count) in cumulative.iter().enumerate() {
            let mut le = String::new();
            match bounds.get(index) {
                Some(bound) => write_value(&mut le, Value::Float(*bound)),
                None => le.push_str("+Inf"),
            }
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        let count = cumulative.last().copied().unwrap_or_default();
        self.sample(&format!("{name}_count"), labels, count)
    }

    pub(crate) fn finish(self) -> String {
        self.text
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

fn write_value(out: &mut String, value: Value) {
    match value {
        Value::Integer(value) => {
            let _ = write!(out, "{value}");
        }
        Value::Float(value) if value.is_nan() => out.push_str("NaN"),
        Value::Float(value) if value.is_infinite() => {
            out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        }
        Value::Float(value) => {
            let _ = write!(out, "{value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_written_in_the_format() {
        let mut exposition = Exposition::default();
        exposition
            .family(
                "hearth_things_total",
                Kind::Counter,
                "Things.\nCounted \\ here.",
            )
            .sample("hearth_things_total", &[], 3_u64)
            .sample(
                "hearth_things_total",
                &[("group", "a\"b\\c\nd"), ("status", "2xx")],
                u64::MAX,
            );
        exposition
            .family("hearth_ratio", Kind::Gauge, "A ratio.")
            .sample("hearth_ratio", &[], 0.25)
            .sample("hearth_ratio", &[("x", "inf")], f64::INFINITY)
            .sample("hearth_ratio", &[("x", "nan")], f64::NAN);
        exposition
            .family("hearth_wait_seconds", Kind::Histogram, "Waits.")
            .histogram(
                "hearth_wait_seconds",
                &[("group", "g")],
                &[0.005, 1.0, 2.5],
                &[1, 3, 3, 4],
                12.5,
            );
        assert_eq!(
            exposition.finish(),
            "# HELP hearth_things_total Things.\\nCounted \\\\ here.\n\
             # TYPE hearth_things_total counter\n\
             hearth_things_total 3\n\
             hearth_things_total{group=\"a\\\"b\\\\c\\nd\",status=\"2xx\"} 18446744073709551615\n\
             # HELP hearth_ratio A ratio.\n\
             # TYPE hearth_ratio gauge\n\
             hearth_ratio 0.25\n\
             hearth_ratio{x=\"inf\"} +Inf\n\
             hearth_ratio{x=\"nan\"} NaN\n\
             # HELP hearth_wait_seconds Waits.\n\
             # TYPE hearth_wait_seconds histogram\n\
             hearth_wait_seconds_bucket{group=\"g\",le=\"0.005\"} 1\n\
             hearth_wait_seconds_bucket{group=\"g\",le=\"1\"} 3\n\
             hearth_wait_seconds_bucket{group=\"g\",le=\"2.5\"} 3\n\
             hearth_wait_seconds_bucket{group=\"g\",le=\"+Inf\"} 4\n\
             hearth_wait_seconds_sum{group=\"g\"} 12.5\n\
             hearth_wait_seconds_count{group=\"g\"} 4\n"
        );
    }
}
