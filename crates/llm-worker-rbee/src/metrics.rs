//! The worker's Prometheus metrics, served at `GET /metrics`: requests by route and status,
//! prompt and generated tokens, prompt-cache reuse, time to first token and generation
//! time, slots, HTTP connections, and build information.

use rbee_metrics::{Counter, Exposition, Family, Histogram, LATENCY_BUCKETS};
use rbee_types::worker::DoneEvent;

/// What a scrape reads from the worker's state besides the counters.
pub(crate) struct Gauges<'a> {
    /// `cpu`, `cuda` or `metal`.
    pub backend: &'a str,
    /// Tokens generated since the worker started.
    pub tokens_generated: u64,
    /// Slots generating now.
    pub slots_busy: u32,
    /// All slots.
    pub slots_total: u32,
    /// The HTTP server's connections.
    pub connections: rbee_http::ConnectionStats,
}

/// What the worker counts. Counters only go up for the life of the process.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Answered requests by route (a pattern such as `/v1/inference/{id}`) and status.
    pub requests: Family<Counter>,
    prompt_tokens: Counter,
    cached_prompt_tokens: Counter,
    ttft: Histogram,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::counters(&["route", "status"]),
            prompt_tokens: Counter::default(),
            cached_prompt_tokens: Counter::default(),
            ttft: Histogram::new(LATENCY_BUCKETS),
            duration: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts a generation that ended (completed, stopped, cut or cancelled).
    pub(crate) fn finished(&self, done: &DoneEvent) {
        self.prompt_tokens.add(u64::from(done.prompt_tokens));
        self.cached_prompt_tokens
            .add(u64::from(done.cached_prompt_tokens));
        if let Some(ms) = done.time_to_first_token_ms {
            self.ttft.observe(ms as f64 / 1e3);
        }
        self.duration.observe(done.duration_ms as f64 / 1e3);
    }

    /// The text of a scrape.
    pub(crate) fn render(&self, now: &Gauges<'_>) -> String {
        let mut e = Exposition::new();
        e.gauge(
            "rbee_build_info",
            "The worker's version and backend; always 1.",
            &[(
                &[
                    ("component", "llm-worker-rbee"),
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("backend", now.backend),
                ],
                1.0,
            )],
        );
        e.counters(
            "rbee_requests_total",
            "HTTP requests answered, by route and status.",
            &self.requests,
        );
        e.counter(
            "rbee_prompt_tokens_total",
            "Prompt tokens of generations, cached ones included.",
            self.prompt_tokens.get(),
        );
        e.counter(
            "rbee_prompt_cache_tokens_reused_total",
            "Prompt tokens taken from the prompt cache instead of being decoded.",
            self.cached_prompt_tokens.get(),
        );
        e.counter(
            "rbee_generated_tokens_total",
            "Tokens generated.",
            now.tokens_generated,
        );
        e.histogram(
            "rbee_time_to_first_token_seconds",
            "From a generation's arrival at the engine to its first token.",
            &self.ttft,
        );
        e.histogram(
            "rbee_request_duration_seconds",
            "From a generation's arrival at the engine to its end.",
            &self.duration,
        );
        let (busy, total) = (now.slots_busy, now.slots_total);
        e.gauge(
            "rbee_slots",
            "Slots by state.",
            &[
                (&[("state", "busy")], f64::from(busy)),
                (&[("state", "idle")], f64::from(total.saturating_sub(busy))),
            ],
        );
        now.connections.write(&mut e);
        e.finish()
    }
}
