//! The hive's Prometheus metrics, served at `GET /metrics`: requests by route and status
//! (and model, for the front door), tokens and latencies of what passes through the front
//! door, the queue per model, workers by state with their memory and CPU time, downloads,
//! model loads, and build information.

use std::cell::RefCell;
use std::time::Instant;

use rbee_metrics::{Counter, Exposition, Family, Histogram, LATENCY_BUCKETS};
use rbee_types::hive::WorkerState;
use rbee_types::openai::Usage;

use crate::hive::Hive;
use crate::supervisor::Supervisor;

/// What the hive counts. Counters only go up for the life of the process.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<Counter>,
    prompt_tokens: Family<Counter>,
    generated_tokens: Family<Counter>,
    ttft: Family<Histogram>,
    duration: Family<Histogram>,
    model_loads: Family<Counter>,
}

fn latencies() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::counters(&["route", "model", "status"]),
            prompt_tokens: Family::counters(&["model"]),
            generated_tokens: Family::counters(&["model"]),
            ttft: Family::new(&["model"], latencies),
            duration: Family::new(&["model"], latencies),
            model_loads: Family::counters(&["result"]),
        }
    }
}

thread_local! {
    /// The model the request on this thread was for (set by the front door).
    static MODEL: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Names the model of the request this thread handles, for its `rbee_requests_total`.
pub(crate) fn label_model(model: &str) {
    MODEL.with(|m| *m.borrow_mut() = model.to_owned());
}

impl Metrics {
    /// Counts an answered request; the model is the one the front door named on this
    /// thread, if any.
    pub(crate) fn request(&self, route: &str, status: Option<u16>) {
        let model = MODEL.with(|m| std::mem::take(&mut *m.borrow_mut()));
        let status = status.unwrap_or(0).to_string();
        self.requests.with(&[route, &model, &status]).inc();
    }

    /// Counts a worker that became ready (`success`) or ended while loading (`failure`).
    pub(crate) fn model_load(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.model_loads.with(&[result]).inc();
    }

    /// The text of a scrape.
    pub(crate) fn render(&self, hive: &Hive) -> String {
        let mut e = Exposition::new();
        e.gauge(
            "rbee_build_info",
            "The hive's version; always 1.",
            &[(
                &[
                    ("component", "rbee-hive"),
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("supervisor", hive.supervisor.name()),
                ],
                1.0,
            )],
        );
        e.counters(
            "rbee_requests_total",
            "HTTP requests answered, by route, model (front door) and status.",
            &self.requests,
        );
        e.counters(
            "rbee_prompt_tokens_total",
            "Prompt tokens of answers passed through the front door.",
            &self.prompt_tokens,
        );
        e.counters(
            "rbee_generated_tokens_total",
            "Tokens generated in answers passed through the front door.",
            &self.generated_tokens,
        );
        e.histograms(
            "rbee_time_to_first_token_seconds",
            "From a streamed request's arrival at the hive to its first event.",
            &self.ttft,
        );
        e.histograms(
            "rbee_request_duration_seconds",
            "From a front-door request's arrival at the hive to the end of its answer.",
            &self.duration,
        );
        let depths = hive.queues.depths();
        let depth_samples: Vec<(Vec<(&str, &str)>, f64)> = depths
            .iter()
            .map(|(m, n)| (vec![("model", m.as_str())], *n as f64))
            .collect();
        e.gauge(
            "rbee_queue_depth",
            "Front-door requests waiting for a slot, per model.",
            &depth_samples,
        );
        let workers = hive.registry.all();
        let states: Vec<(Vec<(&str, &str)>, f64)> = WorkerState::ALL
            .iter()
            .map(|s| {
                let n = workers.iter().filter(|w| w.state == *s).count();
                (vec![("state", s.as_str())], n as f64)
            })
            .collect();
        e.gauge("rbee_workers", "Workers by state.", &states);
        let usage: Vec<(String, String, Use)> = workers
            .iter()
            .map(|w| {
                let u = worker_use(hive, &w.spec.unit, w.pid);
                (w.spec.id.clone(), w.spec.model_ref.to_string(), u)
            })
            .collect();
        let rows = |f: fn(&Use) -> Option<f64>| -> Vec<(Vec<(&str, &str)>, f64)> {
            usage
                .iter()
                .filter_map(|(id, m, u)| {
                    Some((vec![("worker", id.as_str()), ("model", m.as_str())], f(u)?))
                })
                .collect()
        };
        e.gauge(
            "rbee_worker_memory_bytes",
            "Memory of each worker (its unit's cgroup under systemd, else its resident set).",
            &rows(|u| u.memory_bytes.map(|b| b as f64)),
        );
        e.counter_samples(
            "rbee_worker_cpu_seconds_total",
            "CPU time of each worker since it started.",
            &rows(|u| u.cpu_seconds),
        );
        e.counter(
            "rbee_downloads_bytes_total",
            "Bytes of model files downloaded from the hub.",
            hive.models.downloaded_bytes(),
        );
        e.counters(
            "rbee_model_loads_total",
            "Workers that finished loading their model (success) or ended while loading (failure).",
            &self.model_loads,
        );
        e.finish()
    }
}

/// What one worker uses.
#[derive(Debug, Default)]
struct Use {
    memory_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
}

/// A worker's memory and CPU time: systemd's accounting of its unit when there is one (all
/// its processes), else (or where systemd does not account) its main process in `/proc`.
fn worker_use(hive: &Hive, unit: &str, pid: Option<u32>) -> Use {
    let mut u = Use::default();
    if let Supervisor::Systemd(s) = &hive.supervisor {
        if let Some(su) = hive.rt.block_on(s.usage(unit)) {
            u.memory_bytes = su.memory_bytes;
            u.cpu_seconds = su.cpu_nsec.map(|n| n as f64 / 1e9);
        }
    }
    if let Some(pid) = pid {
        u.memory_bytes = u
            .memory_bytes
            .or_else(|| rbee_metrics::process::rss_bytes(pid));
        u.cpu_seconds = u
            .cpu_seconds
            .or_else(|| rbee_metrics::process::cpu_seconds(pid));
    }
    u
}

/// One front-door request's figures, recorded as its answer passes through the hive.
pub(crate) struct Tally<'a> {
    metrics: &'a Metrics,
    model: String,
    started: Instant,
    first_event: bool,
}

impl<'a> Tally<'a> {
    /// Starts timing a request for `model` that arrived at `started`.
    pub(crate) fn new(metrics: &'a Metrics, model: &str, started: Instant) -> Tally<'a> {
        Tally {
            metrics,
            model: model.to_owned(),
            started,
            first_event: false,
        }
    }

    /// A streamed event went to the client; the first one is the time to first token.
    pub(crate) fn event(&mut self) {
        if !self.first_event {
            self.first_event = true;
            let secs = self.started.elapsed().as_secs_f64();
            self.metrics.ttft.with(&[&self.model]).observe(secs);
        }
    }

    /// The answer's token counts.
    pub(crate) fn usage(&self, u: &Usage) {
        let m = [self.model.as_str()];
        self.metrics
            .prompt_tokens
            .with(&m)
            .add(u64::from(u.prompt_tokens));
        self.metrics
            .generated_tokens
            .with(&m)
            .add(u64::from(u.completion_tokens));
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.duration.with(&[&self.model]).observe(secs);
    }
}
