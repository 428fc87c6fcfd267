//! Placeholder: the server ledger (filled in by its own change).
