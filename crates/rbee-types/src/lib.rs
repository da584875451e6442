//! Wire types, error codes, exit codes and environment variable names shared by every
//! rbee binary. Nothing here does I/O: it is the vocabulary the keeper, the hive and the
//! worker speak to each other, parsed once where it enters a program.
//!
//! - [`hive`], [`worker`]: every request and answer of rbee's two HTTP APIs;
//!   [`openai`]: the OpenAI-compatible routes both serve.
//! - [`ModelRef`], [`Backend`]: values that cross every boundary, with `FromStr`,
//!   `Display` and serde going through them.
//! - [`error`]: the error envelope and its codes; [`exit`]: exit codes; [`env`]: variables.
//! - [`watch`]: how several threads follow a shared job's progress (a download's latest
//!   state, a build's every event).

pub mod backend;
pub mod env;
pub mod error;
pub mod exit;
pub mod hive;
pub mod model_ref;
pub mod openai;
pub mod watch;
pub mod worker;

pub use backend::Backend;
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use model_ref::ModelRef;

/// Serde for a type through its `Display` and `FromStr` (the string form is the wire form;
/// a parse error keeps its message, which servers map to an error code).
#[macro_export]
#[doc(hidden)]
macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The HTTP API version every rbee component serves under `/v1`.
pub const API_VERSION: &str = "v1";

/// Seconds since the Unix epoch (0 if the clock is before it): the timestamps in records,
/// catalogues and registries.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
