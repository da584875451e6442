//! Prometheus metrics for rbee's daemons, without a metrics framework: [`Counter`] and
//! [`Histogram`] are atomics a hot path updates without locks, [`Family`] keys them by label
//! values, and [`Exposition`] writes the text format (version 0.0.4) that Prometheus
//! scrapes. Gauges are read when scraped, so they need no storage here; [`process`] reads
//! a process's CPU time and memory, [`host`] the machine's memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub mod host;
pub mod process;

/// The `Content-Type` of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds for LLM work: a health check takes milliseconds, a first
/// token tens of milliseconds to seconds, a long answer minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into cumulative buckets, with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum of observations in microunits (µs for seconds), so it stays an integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with upper bounds `bounds` (ascending) and `+Inf`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation (negative values count as 0).
    pub fn observe(&self, value: f64) {
        let value = value.max(0.0);
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn snapshot(&self) -> (Vec<(String, u64)>, f64, u64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_owned(), |b| number(*b));
            buckets.push((le, cumulative));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum, cumulative)
    }
}

/// Metrics of one kind keyed by their label values.
#[derive(Debug)]
pub struct Family<M> {
    labels: &'static [&'static str],
    make: fn() -> M,
    members: Mutex<BTreeMap<Vec<String>, Arc<M>>>,
}

impl<M> Family<M> {
    /// A family with label names `labels`; `make` creates a member for new label values.
    pub fn new(labels: &'static [&'static str], make: fn() -> M) -> Family<M> {
        Family {
            labels,
            make,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// The member for `values` (one per label name), created at first use.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            members
                .entry(key)
                .or_insert_with(|| Arc::new((self.make)())),
        )
    }

    /// Each member with its label pairs.
    fn each(&self) -> Vec<(Vec<Label>, Arc<M>)> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .iter()
            .map(|(values, m)| {
                let labels = self.labels.iter().copied().zip(values.iter().cloned());
                (labels.collect(), Arc::clone(m))
            })
            .collect()
    }
}

impl Family<Counter> {
    /// A family of counters.
    pub fn counters(labels: &'static [&'static str]) -> Family<Counter> {
        Family::new(labels, Counter::default)
    }
}

/// The label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A label name and value of a family member.
type Label = (&'static str, String);

/// A scrape's text, metric family by metric family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        self.sample(name, &[], &value.to_string());
    }

    /// A gauge with one sample per label set.
    pub fn gauge<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(L, f64)],
    ) {
        self.rows(name, "gauge", help, samples);
    }

    /// A counter with one sample per label set, read elsewhere (CPU time a process used).
    pub fn counter_samples<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(L, f64)],
    ) {
        self.rows(name, "counter", help, samples);
    }

    fn rows<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: &[(L, f64)],
    ) {
        self.header(name, kind, help);
        for (labels, v) in samples {
            self.sample(name, labels.as_ref(), &number(*v));
        }
    }

    /// A family of counters; written even when it has no member yet, so that dashboards
    /// and `absent()` alerts see the metric exist.
    pub fn counters(&mut self, name: &str, help: &str, family: &Family<Counter>) {
        self.header(name, "counter", help);
        for (labels, c) in family.each() {
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &pairs, &c.get().to_string());
        }
    }

    /// One histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        self.histogram_samples(name, &[], h);
    }

    /// A family of histograms.
    pub fn histograms(&mut self, name: &str, help: &str, family: &Family<Histogram>) {
        self.header(name, "histogram", help);
        for (labels, h) in family.each() {
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.histogram_samples(name, &pairs, &h);
        }
    }

    fn histogram_samples(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        let (buckets, sum, count) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (le, n) in &buckets {
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, &n.to_string());
        }
        self.sample(&format!("{name}_sum"), labels, &number(sum));
        self.sample(&format!("{name}_count"), labels, &count.to_string());
    }

    /// The text to answer a scrape with.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value with `\`, `"` and line breaks escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as Prometheus parses it (Go's float syntax; integers without `.0`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        static B: &[f64] = &[0.1, 1.0];
        let h = Histogram::new(B);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        let mut e = Exposition::new();
        e.histogram("x_seconds", "X.", &h);
        let text = e.finish();
        assert!(text.contains("x_seconds_bucket{le=\"0.1\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_sum 3.65\n"), "{text}");
        assert!(text.contains("x_seconds_count 4\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_families_keep_members_apart() {
        let f = Family::counters(&["route", "status"]);
        f.with(&["/v1/a\"b", "200"]).add(2);
        f.with(&["/v1/a\"b", "200"]).inc();
        f.with(&["/v1/c", "503"]).inc();
        let mut e = Exposition::new();
        e.counters("r_total", "Requests.", &f);
        let text = e.finish();
        assert!(
            text.contains("r_total{route=\"/v1/a\\\"b\",status=\"200\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("r_total{route=\"/v1/c\",status=\"503\"} 1\n"),
            "{text}"
        );
        assert!(text.starts_with("# HELP r_total Requests.\n# TYPE r_total counter\n"));
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
