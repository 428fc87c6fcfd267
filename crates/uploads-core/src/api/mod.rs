//! Placeholder: request building and response parsing (filled in by its own change).
