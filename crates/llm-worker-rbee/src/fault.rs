//! Injected faults, for the tests of the worker's failure paths: no input that passes the
//! checks makes the engine thread panic, yet a panic there must end the worker at once
//! with a clear line and a non-zero exit. `RBEE_WORKER_FAULT=panic-loading` panics as the
//! model load starts, `panic-serving` as the first request is admitted. Unset (always, in
//! real use), nothing happens.

use std::sync::OnceLock;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// The engine thread starts loading the model.
    Loading,
    /// The engine admits a request.
    Serving,
}

fn configured() -> Option<Point> {
    static FAULT: OnceLock<Option<Point>> = OnceLock::new();
    *FAULT.get_or_init(|| match std::env::var("RBEE_WORKER_FAULT").ok()?.as_str() {
        "panic-loading" => Some(Point::Loading),
        "panic-serving" => Some(Point::Serving),
        other => {
            tracing::warn!(
                fault = other,
                "RBEE_WORKER_FAULT names no known fault; ignored"
            );
            None
        }
    })
}

/// Panics when the fault configured for this run is `at`.
pub(crate) fn inject(at: Point) {
    if configured() == Some(at) {
        panic!("injected fault at {at:?} (RBEE_WORKER_FAULT)");
    }
}
