//! A durable, OpenAI-compatible Uploads + Files server on hyper.

pub mod store;
