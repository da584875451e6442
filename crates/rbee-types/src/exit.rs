//! Process exit codes with a fixed meaning, so a supervisor (the hive) can react to them.

/// Success, including a graceful drain after SIGTERM or `/v1/admin/shutdown`.
pub const OK: i32 = 0;
/// An unexpected runtime failure.
pub const FAILURE: i32 = 1;
/// Invalid command line (clap's own code).
pub const USAGE: i32 = 2;
/// The HTTP port could not be bound because another process holds it: pick another port.
pub const PORT_IN_USE: i32 = 3;
/// The model file is missing, unreadable, not GGUF, or llama.cpp refused to load it.
pub const MODEL_INVALID: i32 = 4;
/// The requested backend or device is not available in this build or on this machine.
pub const BACKEND_UNAVAILABLE: i32 = 5;
/// The KV cache of the slots asked for does not fit in the memory available: fewer slots
/// or a smaller context.
pub const INSUFFICIENT_MEMORY: i32 = 6;
