//! Examples that embed image2model (see the `[[example]]` entries).
