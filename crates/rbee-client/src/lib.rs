//! Typed, blocking clients of rbee's HTTP APIs: [`HiveClient`] for `rbee-hive`,
//! [`WorkerClient`] for `llm-worker-rbee`. Bodies are the types of `rbee_types::{hive,
//! worker}`; a server's error envelope comes back as [`ClientError::Api`] with its code
//! and details intact, so callers can react to codes and show the server's message.

mod hive;
mod http;
mod worker;

pub use hive::{Download, HiveClient};
pub use http::{ClientError, Events};
pub use worker::WorkerClient;
