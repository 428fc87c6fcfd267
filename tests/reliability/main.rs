//! Reliability and security of the server: crash consistency, hostile input, isolation
//! between owners, a bounded load, and expiry on an injected clock.
//!
//! Every test is bounded (fixed iteration counts, seeded randomness) and asserts no
//! wall-clock bound; the few timeouts here only keep a stuck server from hanging the suite.

mod child;
mod crash;
mod data_dir;
mod expiry;
mod hostile;
mod isolation;
mod load;
mod support;
