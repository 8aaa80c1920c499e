//! Intentionally empty: this crate exists for its Cargo.toml (see there), which pins the
//! features of dependencies chatd, chatctl and chat share.
