//! The uploads workspace's cross-crate tests live in `tests/`. This library holds no code: it
//! compiles the README's Rust examples as doctests, so the first code a user copies builds.
#![cfg_attr(doctest, doc = include_str!("../README.md"))]
