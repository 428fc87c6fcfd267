//! Placeholder: the retry policy (filled in by its own change).
