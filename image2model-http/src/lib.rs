//! image2model-http
