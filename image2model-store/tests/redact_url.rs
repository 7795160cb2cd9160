//! `redact_url` against the URL parser (found by the `config_parse` fuzz
//! target).

use image2model_store::open::redact_url;

/// A special scheme with one slash (`http:/user:pw@host`) has user info for
/// the URL parser, but the text scan looked for `://` and returned the URL
/// as it was, password included, into error messages and `config check`.
#[test]
fn a_password_the_url_parser_finds_is_redacted_even_without_two_slashes() {
    for raw in [
        "http:/app:s3cretpassword1@db:5432/i2m",
        "https:\\\\app:s3cretpassword1@db/x",
        "http:app:s3cretpassword1@db/x?sslmode=require",
    ] {
        let shown = redact_url(raw);

        assert!(!shown.contains("s3cretpassword1"), "{raw} → {shown}");
    }
}

#[test]
fn ordinary_urls_keep_their_text() {
    assert_eq!(
        redact_url("postgres://app:s3cret@db:5432/i2m"),
        "postgres://app:REDACTED@db:5432/i2m"
    );
    assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    assert_eq!(
        redact_url("redis://:pw@h:6379/0"),
        "redis://:REDACTED@h:6379/0"
    );
}
