//! The hive's Prometheus metrics, served at `GET /metrics`: requests by route and status
//! (and model, for the front door), tokens and latencies of what passes through the front
//! door, the queue per model, workers by state with their memory and CPU time, downloads,
//! model loads, and build information.

use std::cell::RefCell;
use std::time::Instant;

use rbee_metrics::{Counter, Exposition, Family, Histogram, LATENCY_BUCKETS};
use rbee_types::hive::WorkerState;
use rbee_types::openai::Usage;

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

    /// The text of a scrape: the counters and `now`.
    pub(crate) fn render(&self, now: &Gauges) -> String {
        let mut e = Exposition::new();
        e.gauge(
            "rbee_build_info",
            "The hive's version; always 1.",
            &[(
                &[
                    ("component", "rbee-hive"),
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("supervisor", now.supervisor),
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
        let depth_samples: Vec<(Vec<(&str, &str)>, f64)> = now
            .queue_depths
            .iter()
            .map(|(m, n)| (vec![("model", m.as_str())], *n as f64))
            .collect();
        e.gauge(
            "rbee_queue_depth",
            "Front-door requests waiting for a slot, per model.",
            &depth_samples,
        );
        let states: Vec<(Vec<(&str, &str)>, f64)> = WorkerState::ALL
            .iter()
            .map(|s| {
                let n = now.workers.iter().filter(|w| w.state == *s).count();
                (vec![("state", s.as_str())], n as f64)
            })
            .collect();
        e.gauge("rbee_workers", "Workers by state.", &states);
        let rows = |f: fn(&WorkerUse) -> Option<f64>| -> Vec<(Vec<(&str, &str)>, f64)> {
            now.workers
                .iter()
                .filter_map(|w| {
                    Some((
                        vec![("worker", w.id.as_str()), ("model", w.model.as_str())],
                        f(w)?,
                    ))
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
            now.downloaded_bytes,
        );
        e.counters(
            "rbee_model_loads_total",
            "Workers that finished loading their model (success) or ended while loading (failure).",
            &self.model_loads,
        );
        now.connections.write(&mut e);
        e.finish()
    }
}

/// What a scrape reads from the hive besides the counters ([`crate::scrape`] gathers it).
pub(crate) struct Gauges {
    /// How workers run (`systemd-system`, `systemd-user`, `process`).
    pub supervisor: &'static str,
    /// Requests waiting, per model.
    pub queue_depths: Vec<(String, usize)>,
    /// Every worker.
    pub workers: Vec<WorkerUse>,
    /// Bytes downloaded from the hub since the hive started.
    pub downloaded_bytes: u64,
    /// The API server's connections.
    pub connections: rbee_http::ConnectionStats,
}

/// One worker: its state and what it uses.
#[derive(Debug)]
pub(crate) struct WorkerUse {
    /// Worker id.
    pub id: String,
    /// Its model reference.
    pub model: String,
    /// Its state.
    pub state: WorkerState,
    /// Memory in bytes, when known.
    pub memory_bytes: Option<u64>,
    /// CPU seconds since it started, when known.
    pub cpu_seconds: Option<f64>,
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
