//! End-to-end tests of rbee live in `tests/`; this library is empty on purpose.
