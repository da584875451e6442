//! The hive's and workers' answers as a person reads them: rbee-client's typed errors
//! turned into the keeper's [`Failure`] (the server's message, code and details; or that
//! nothing answered).

use rbee_client::ClientError;
use rbee_types::ApiError;

use crate::report::Failure;

/// A server's error envelope as a [`Failure`] of `server` (`rbee-hive`, `llm-worker-rbee`).
pub(crate) fn api_failure(server: &'static str, e: &ApiError) -> Failure {
    let mut f = Failure::new(server, e.error.message.clone())
        .code(e.error.code.as_str())
        .detail(format!("code: {}", e.error.code.as_str()));
    for (k, v) in &e.error.details {
        f = f.detail(format!("{k}: {v}"));
    }
    f
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Api { server, error, .. } => api_failure(server, &error),
            ClientError::Unreachable { .. } => Failure::new("rbee-keeper", e.to_string()),
            ClientError::Decode { server, .. } => Failure::new(server, e.to_string()).suggest([
                "the keeper and the node may run different rbee versions: rbee-keeper hive status"
                    .to_string(),
            ]),
        }
    }
}

/// Whether nothing answered (as opposed to an answer that was an error).
pub(crate) fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unreachable { .. })
}
