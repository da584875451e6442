//! Command-line arguments of `llm-worker-rbee`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

#[cfg(feature = "cuda")]
macro_rules! cuda {
    () => {
        ", cuda"
    };
}
#[cfg(not(feature = "cuda"))]
macro_rules! cuda {
    () => {
        ""
    };
}
#[cfg(feature = "metal")]
macro_rules! metal {
    () => {
        ", metal"
    };
}
#[cfg(not(feature = "metal"))]
macro_rules! metal {
    () => {
        ""
    };
}

/// `--version`: the crate version and the backends compiled in, which rbee-hive checks
/// when it records a worker binary (`llm-worker-rbee 0.1.0 (backends: cpu, cuda)`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (backends: cpu",
    cuda!(),
    metal!(),
    ")"
);

pub use rbee_types::Backend;
use rbee_types::ModelRef;

/// Whether this binary was built with support for `backend`.
pub fn compiled_in(backend: Backend) -> bool {
    match backend {
        Backend::Cpu => true,
        Backend::Cuda => cfg!(feature = "cuda"),
        Backend::Metal => cfg!(feature = "metal"),
    }
}

/// rbee's inference worker: loads one GGUF model with llama.cpp and streams tokens over
/// HTTP (SSE) to several clients at once.
///
/// The worker is normally started by rbee-hive as the systemd unit
/// `rbee-worker@<model>.service`; it also runs standalone:
///
///   llm-worker-rbee --model SmolLM2-135M-Instruct.Q4_1.gguf --port 8081
///
///   curl -N localhost:8081/v1/inference -d '{"prompt": "Write a haiku about bees"}'
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llm-worker-rbee",
    version = VERSION,
    about,
    long_about,
    verbatim_doc_comment
)]
pub struct Args {
    /// Path of the GGUF model file to load.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,

    /// Where the layers run: cpu, cuda or metal. cuda and metal need a worker built with
    /// that cargo feature.
    #[arg(long, default_value_t = Backend::Cpu)]
    pub backend: Backend,

    /// Index of the GPU to use (ignored for cpu).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub device: u32,

    /// Address to listen on. Keep the default (loopback) unless a firewall or an API key
    /// protects the port.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// File holding the API key clients must send as `Authorization: Bearer <key>`. The
    /// key can also come from the environment variable RBEE_WORKER_API_KEY. Never put a key
    /// on the command line: `ps` shows it to every user.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Serve GET /metrics (Prometheus) without the API key to clients on this machine
    /// (loopback), for a local Prometheus or agent. Other clients still need the key.
    #[arg(long)]
    pub open_metrics: bool,

    /// Concurrent requests, decoded together in one batch. A request beyond this gets
    /// 503 ALL_SLOTS_BUSY.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,

    /// Context (prompt + answer) tokens per slot. Default: the model's training context,
    /// capped at 4096.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32)
        .range(16..=i64::from(rbee_types::worker::MAX_CTX_PER_SLOT)))]
    pub ctx_size: Option<u32>,

    /// Clear a slot's KV cache after every request instead of keeping it for the next
    /// request that starts with the same tokens (the next turn of a chat, a shared system
    /// prompt). Answers are the same either way; only the time to the first token differs.
    #[arg(long)]
    pub no_prompt_cache: bool,

    /// CPU threads for llama.cpp. Default: the number of physical cores (hyper-threads
    /// make decoding slower, not faster).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Worker id reported to the hive and in /v1/info. Default: worker-<pid>.
    #[arg(long)]
    pub worker_id: Option<String>,

    /// Base URL of rbee-hive; once the HTTP server is up the worker POSTs
    /// {hive}/v1/workers/ready. Omit to run standalone.
    #[arg(long, value_name = "URL")]
    pub hive_url: Option<String>,

    /// The catalogue reference of the model (e.g. hf:org/repo:Q4_1), reported back in
    /// /v1/info and to the hive.
    #[arg(long, value_name = "REF")]
    pub model_ref: Option<ModelRef>,

    /// Seconds active requests may take to finish after SIGTERM or /v1/admin/shutdown
    /// before they are cancelled.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub drain_timeout: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbee_types::worker::WorkerArgs;

    /// The hive builds the command line from `WorkerArgs`; this parser must read every
    /// value back as it was meant.
    #[test]
    fn the_hives_worker_args_parse_back_to_the_same_values() {
        let w = WorkerArgs {
            model: "/var/lib/rbee/models/m.gguf".into(),
            backend: Backend::Cuda,
            device: 1,
            host: "::1".parse().unwrap(),
            port: 9301,
            slots: 4,
            ctx_size: Some(512),
            worker_id: "m-2".into(),
            model_ref: "hf:org/repo:Q4_K_M@v1".parse().unwrap(),
            hive_url: "http://127.0.0.1:9200".into(),
            drain_timeout_secs: 25,
            open_metrics: true,
        };
        let args =
            Args::try_parse_from(std::iter::once("llm-worker-rbee".to_owned()).chain(w.to_args()))
                .unwrap();
        assert_eq!(args.model, w.model);
        assert_eq!(args.backend, w.backend);
        assert_eq!(args.device, w.device);
        assert_eq!(args.host, w.host);
        assert_eq!(args.port, w.port);
        assert_eq!(args.slots, w.slots);
        assert_eq!(args.ctx_size, w.ctx_size);
        assert_eq!(args.worker_id.as_deref(), Some(w.worker_id.as_str()));
        assert_eq!(args.model_ref.as_ref(), Some(&w.model_ref));
        assert_eq!(args.hive_url.as_deref(), Some(w.hive_url.as_str()));
        assert_eq!(args.drain_timeout, w.drain_timeout_secs);
        assert!(args.open_metrics);
        let without = WorkerArgs {
            ctx_size: None,
            open_metrics: false,
            ..w
        };
        let args = Args::try_parse_from(
            std::iter::once("llm-worker-rbee".to_owned()).chain(without.to_args()),
        )
        .unwrap();
        assert_eq!(args.ctx_size, None);
        assert!(!args.open_metrics);
    }

    #[test]
    fn an_unknown_backend_or_reference_is_a_usage_error() {
        for bad in [["--backend", "rocm"], ["--model-ref", "smol.gguf"]] {
            let e = Args::try_parse_from(["llm-worker-rbee", "--model", "/m.gguf", bad[0], bad[1]])
                .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }
}
