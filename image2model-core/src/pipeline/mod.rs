//! The job pipeline (in progress).
