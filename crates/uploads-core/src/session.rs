//! Placeholder: the client session (filled in by its own change).
