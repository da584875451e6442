//! Wire types, error codes, exit codes and environment variable names shared by every
//! rbee binary. Nothing here does I/O: it is the vocabulary the keeper, the hive and the
//! worker speak to each other.

pub mod env;
pub mod error;
pub mod exit;
pub mod worker;

pub use error::{ApiError, ErrorBody, ErrorCode};

/// The HTTP API version every rbee component serves under `/v1`.
pub const API_VERSION: &str = "v1";

/// Seconds since the Unix epoch (0 if the clock is before it): the timestamps in records,
/// catalogues and registries.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
