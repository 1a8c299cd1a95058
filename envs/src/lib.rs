//! Gymnasium-compatible continuous-control environments: native Rust ports and a bridge
//! to Python Gymnasium for the rest.
