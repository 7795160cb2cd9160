//! image2model-store
