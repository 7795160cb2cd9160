//! The FAL.AI generator (see issue 3).
