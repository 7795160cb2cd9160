//! In-memory stores (in progress).
