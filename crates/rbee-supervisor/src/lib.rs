//! Runs rbee workers as transient systemd units (`rbee-worker@<model>.service`) over
//! D-Bus, on the system manager or a user's manager.
//!
//! - [`unit_name`]: unit names from arbitrary model ids, escaped like `systemd-escape`.
//! - [`properties`]: the unit's properties as data (per manager kind), so tests can check
//!   them and read them back from the real manager.
//! - [`systemd`]: the D-Bus client: start, stop, list, state, following state changes
//!   through signals.

pub mod properties;
pub mod systemd;
pub mod unit_name;
