//! Placeholder: the multipart decoder (filled in by its own change).
