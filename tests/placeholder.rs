//! Cross-crate tests live here.
