//! Test harness shared by rbee's integration tests and benchmarks: the test model, free
//! ports, a child-process guard that never leaks processes, and small HTTP/SSE clients that
//! talk to the real binaries over loopback.

pub mod container;
pub mod disk;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod openai_client;
pub mod process;
pub mod pty;
pub mod sshd;
pub mod systemd;
pub mod worker_repo;

/// Set in CI: a test that would skip for a missing prerequisite fails instead.
pub const STRICT_ENV: &str = "RBEE_TEST_STRICT";

/// Skips the calling test with a visible reason, or fails it when [`STRICT_ENV`] is set.
/// Returns (`Default::default()`, so it works in helpers returning `Option`) when skipping.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            let reason = format!($($reason)+);
            if std::env::var_os($crate::STRICT_ENV).is_some() {
                panic!("prerequisite missing under {}: {reason}", $crate::STRICT_ENV);
            }
            eprintln!("SKIPPED: {reason}");
            return Default::default();
        }
    };
}
