//! The hive's and workers' answers as a person reads them: rbee-client's typed errors
//! turned into the keeper's [`Failure`] (the server's message, code and details; or that
//! nothing answered).

use rbee_client::ClientError;
use rbee_types::{ApiError, ErrorCode};

use crate::report::Failure;

/// A server's error envelope as a [`Failure`] of `server` (`rbee-hive`, `llm-worker-rbee`),
/// with what to do next when the server did not say.
pub(crate) fn api_failure(server: &'static str, e: &ApiError) -> Failure {
    api_failure_on(server, e, None)
}

fn api_failure_on(server: &'static str, e: &ApiError, node: Option<&str>) -> Failure {
    let code = e.error.code;
    let mut f = Failure::new(server, e.error.message.clone())
        .code(code.as_str())
        .detail(format!("code: {}", code.as_str()));
    for (k, v) in &e.error.details {
        f = f.detail(format!("{k}: {v}"));
    }
    f.suggest(next_step(code, node.unwrap_or("localhost")))
}

/// The concrete next step for an error a hive relays: which command, config key or file.
pub(crate) fn next_step(code: ErrorCode, node: &str) -> Option<String> {
    use ErrorCode as E;
    let n = node;
    Some(match code {
        E::BackendUnavailable => format!(
            "see the backends {n} can run: rbee-keeper setup check --node {n}; a GPU backend needs its driver and a worker built for it (rbee-keeper setup install --node {n} --backend cuda)"
        ),
        E::DeviceNotFound => format!(
            "see the devices of {n}: rbee-keeper setup check --node {n}, then pass one of them with --device"
        ),
        E::MissingApiKey | E::InvalidApiKey => format!(
            "put the hive's key in the keeper's config: [nodes.{n}] api_key = \"…\" in ~/.config/rbee/config.toml (the hive's key is api_key in its config, or its key file)"
        ),
        E::ModelNotFound => format!(
            "see the models {n} serves: rbee-keeper models list --node {n}; or give a reference such as hf:org/repo:Q4_K_M"
        ),
        E::ModelAccessDenied => format!(
            "a gated or private repository: accept its terms on huggingface.co, then give the hive a token (HF_TOKEN or HF_TOKEN_PATH in its environment on {n})"
        ),
        E::InsufficientRam | E::InsufficientVram => format!(
            "stop an idle worker (rbee-keeper workers list --node {n}, then workers shutdown ID), ask for fewer slots or a smaller context, or choose a smaller quantization"
        ),
        E::InsufficientDisk => format!(
            "free disk space on {n}, or remove a model: rbee-keeper models rm NAME --node {n}"
        ),
        E::ModelInUse => format!(
            "stop its workers first: rbee-keeper workers shutdown MODEL --node {n}"
        ),
        E::WorkerNotFound => format!("see the workers: rbee-keeper workers list --node {n}"),
        // A worker that failed to load has ended: its last lines are in the error itself.
        E::ModelLoadFailed => format!(
            "the worker's last log lines are above; the hive's log has the rest: rbee-keeper logs --node {n}"
        ),
        E::SpawnFailed | E::InferenceFailed => format!(
            "read the worker's log: rbee-keeper logs --node {n} --worker ID (rbee-keeper workers list shows the id)"
        ),
        E::DownloadFailed | E::DownloadTimeout | E::ChecksumMismatch => format!(
            "run the same command again (the download resumes); the hive's log says more: rbee-keeper logs --node {n}"
        ),
        E::QueueFull | E::AllSlotsBusy | E::Overloaded => format!(
            "the model is busy: retry in a few seconds, or raise queue_max / slots in the hive's config on {n}"
        ),
        E::NoWorkerSource | E::CargoNotFound | E::CudaToolkitNotFound | E::WorkerBuildFailed => format!(
            "see what the node has and needs: rbee-keeper setup install --node {n} (it checks the tools first)"
        ),
        E::BinaryVerificationFailed | E::BinaryNotFound => format!(
            "the worker binary must run `--version`: check worker_binary in the hive's config on {n}, or rebuild it: rbee-keeper setup install --node {n}"
        ),
        E::Draining => format!("the hive on {n} is stopping; start it again: rbee-keeper hive start --node {n}"),
        _ => return None,
    })
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Api {
                server,
                error,
                node,
                ..
            } => api_failure_on(server, &error, node.as_deref()),
            ClientError::Unreachable {
                server: "rbee-hive",
                node: Some(node),
                ref base,
                ref why,
            } => Failure::new(
                "rbee-keeper",
                format!("cannot reach the hive of node {node} at {base}"),
            )
            .detail(format!(
                "{} attempts, the last: {why}",
                crate::node::ATTEMPTS
            ))
            .suggest([
                format!("is rbee-hive running there? start it: rbee-keeper hive start --node {node}"),
                format!("check the node's address and port: rbee-keeper setup list-nodes (or [nodes.{node}] hive_url in the keeper's config)"),
            ]),
            ClientError::Unreachable { .. } => Failure::new("rbee-keeper", e.to_string()),
            ClientError::Decode {
                server,
                node,
                path,
                why,
            } => Failure::new(
                server,
                format!(
                    "invalid answer from the hive on {}",
                    node.as_deref().unwrap_or("its node")
                ),
            )
            .detail(format!("{path}: {why}"))
            .suggest([
                "the keeper and the node may run different rbee versions, or something else answers on the hive's port: rbee-keeper hive status"
                    .to_string(),
            ]),
        }
    }
}
