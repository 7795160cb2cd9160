//! `X-Request-Id` on every response, and a tracing span per request.
//!
//! A sane incoming id (1 to 64 characters of `[A-Za-z0-9._-]`) is echoed so
//! that a proxy's id follows the request through our logs; anything else is
//! replaced by a new ULID, so a client cannot inject log lines or headers.
//!
//! # The request span, made when first needed
//!
//! Every event logged while a request runs carries the `request` span:
//! its id, method, path, client IP and, once the key is known, key id. Most
//! requests log nothing at the levels enabled (a routine read's access line
//! is `debug`), and making the span anyway (formatting its fields, entering
//! and leaving it at every poll) was a large share of the server's CPU on a
//! job-status read (the figure is in `docs/BENCHMARKS.md`, "What profiling
//! found", item 8). So the request's future runs with a [`RequestContext`]
//! in a task-local instead, and the span is made from it by
//! [`RequestSpans`], the layer around the log formatter, when the first
//! event that will be written has no span of its own; later events of the
//! request reuse it. The lines are the same as with a span made up front.
//!
//! This is a performance measure only, and it can be turned off:
//! `REQUEST_SPAN=eager` ([`SpanMode::Eager`]) makes each request's span up
//! front and enters it at every poll, as `tracing::Instrument` does, and the
//! binary then installs the formatter without [`RequestSpans`], so a bug
//! report can rule the lazy span out. To change it safely: a field of the
//! span is added in [`RequestContext::span`] (and, if it is learnt during
//! the request, recorded like [`record_key_id`] does, into the span if it
//! exists and into the context otherwise); [`RequestSpans`] must forward
//! every `Layer` method to the formatter. The logs tests
//! (`tests/api/logs.rs`) read the span's fields off the lines in both modes.
//!
//! # The access log
//!
//! Each request ends with one `response` event (status, elapsed time, and
//! the span's method, path, client IP and key id) under the target
//! [`ACCESS_LOG_TARGET`]. It is logged at `info` when the request changed
//! something (any method but `GET`, `HEAD` and `OPTIONS`), failed (status
//! 400 and up, which covers every refused key, forbidden route and rate
//! limit) or was slow ([`SLOW_REQUEST`]); successful reads are logged at
//! `debug`. Clients poll job status many times a second, and one `info` line
//! per poll cost a large share of the server's throughput on that endpoint (see
//! `docs/BENCHMARKS.md`) while telling an operator nothing new. Every read
//! is logged with `RUST_LOG=info,access=debug`.

use std::cell::RefCell;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use poem::http::{HeaderValue, Method, Uri, header::HeaderName};
use poem::{Request, Response};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Instrument, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access log's events (`RUST_LOG=info,access=debug` logs
/// successful reads too).
pub const ACCESS_LOG_TARGET: &str = "access";

/// A request that takes this long is logged at `info` whatever it was.
pub const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// The header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// When a request's span is made (`REQUEST_SPAN`; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanMode {
    /// When the first event that will be written needs it, by
    /// [`RequestSpans`]: the default.
    #[default]
    Lazy,
    /// At the start of every request, entered at every poll: slower, to
    /// rule the lazy span out.
    Eager,
}

impl SpanMode {
    /// The text form (`lazy` or `eager`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SpanMode::Lazy => "lazy",
            SpanMode::Eager => "eager",
        }
    }
}

impl FromStr for SpanMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lazy" => Ok(SpanMode::Lazy),
            "eager" => Ok(SpanMode::Eager),
            _ => Err(format!("{s:?} is neither lazy nor eager")),
        }
    }
}

/// What a request's span is made of, kept in a task-local for the request's
/// future (see the module docs).
#[derive(Debug)]
pub struct RequestContext {
    id: String,
    method: Method,
    /// Cloning a `Uri` shares its bytes; the path is read only for a span.
    uri: Uri,
    client_ip: Option<IpAddr>,
    key_id: RefCell<Option<String>>,
    /// The span, once an event needed it.
    span: RefCell<Option<tracing::Span>>,
}

impl RequestContext {
    /// The context of `req`, whose id is `id`.
    #[must_use]
    pub fn new(id: String, req: &Request, client_ip: Option<IpAddr>) -> Self {
        Self {
            id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            client_ip,
            key_id: RefCell::new(None),
            span: RefCell::new(None),
        }
    }

    /// The request's span, made now if no event made it yet.
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        if let Some(span) = self.span.borrow().as_ref() {
            return span.clone();
        }
        let span = tracing::info_span!(
            "request",
            request_id = %self.id,
            method = %self.method,
            path = %self.uri.path(),
            client_ip = self.client_ip.map(tracing::field::display),
            key_id = tracing::field::Empty,
        );
        if let Some(key_id) = self.key_id.borrow().as_deref() {
            span.record("key_id", tracing::field::display(key_id));
        }
        *self.span.borrow_mut() = Some(span.clone());
        span
    }
}

/// The current request's id (`-` outside a request).
#[must_use]
pub fn current() -> String {
    REQUEST
        .try_with(|c| c.id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// Names the key that made the current request, in its span (now, or when
/// the span is made). Nothing outside a request.
pub fn record_key_id(key_id: &str) {
    let _ = REQUEST.try_with(|c| {
        *c.key_id.borrow_mut() = Some(key_id.to_owned());
        if let Some(span) = c.span.borrow().as_ref() {
            span.record("key_id", tracing::field::display(key_id));
        }
    });
}

/// The request id, also put into each request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether an incoming id may be echoed.
#[must_use]
pub fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a finished request is a routine read, logged at `debug`: a
/// successful `GET`, `HEAD` or `OPTIONS` that took less than [`SLOW_REQUEST`].
#[must_use]
pub fn is_routine(method: &Method, status: u16, elapsed: Duration) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && status < 400
        && elapsed < SLOW_REQUEST
}

/// The id of `req`: its sane `X-Request-Id`, or a new ULID.
#[must_use]
pub fn resolve(req: &Request) -> String {
    req.headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| ulid::Ulid::new().to_string(), ToOwned::to_owned)
}

/// Runs `fut` as the request of `context`: [`current`] answers its id and
/// events logged meanwhile carry its span, made when an event needs it
/// ([`SpanMode::Lazy`]) or now and entered at every poll
/// ([`SpanMode::Eager`]). The lazy path enters a disabled span, which costs
/// a branch per poll.
pub fn scope<F: Future>(
    context: RequestContext,
    spans: SpanMode,
    fut: F,
) -> impl Future<Output = F::Output> {
    let span = match spans {
        SpanMode::Lazy => tracing::Span::none(),
        SpanMode::Eager => context.span(),
    };
    REQUEST.scope(context, fut.instrument(span))
}

/// The access log's `response` event of a finished request (call inside
/// its [`scope`]); see the module docs for its level.
pub fn log_response(method: &Method, status: u16, elapsed: Duration) {
    if is_routine(method, status, elapsed) {
        tracing::debug!(
            target: ACCESS_LOG_TARGET,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "response"
        );
    } else {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "response"
        );
    }
}

/// Sets `X-Request-Id` on `resp`.
pub fn set_header(resp: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
}

/// The layer around the log formatter `L` that gives an event logged during
/// a request, with no span of its own, the request's span (made then, see
/// the module docs). Everything else goes to `L` unchanged.
#[derive(Debug)]
pub struct RequestSpans<L> {
    inner: L,
}

impl<L> RequestSpans<L> {
    /// Wraps the formatting layer.
    pub fn new(inner: L) -> Self {
        Self { inner }
    }
}

impl<S, L> Layer<S> for RequestSpans<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.is_contextual()
            && ctx.current_span().id().is_none()
            && let Ok(span) = REQUEST.try_with(RequestContext::span)
        {
            // Entered, the span is the current one the formatter reads.
            let _entered = span.enter();
            self.inner.on_event(event, ctx);
            return;
        }
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_modes_parse_from_their_names_only() {
        assert_eq!("lazy".parse(), Ok(SpanMode::Lazy));
        assert_eq!("EAGER".parse(), Ok(SpanMode::Eager));
        assert!("later".parse::<SpanMode>().is_err());
        assert_eq!(SpanMode::default(), SpanMode::Lazy);
        assert_eq!(SpanMode::Eager.as_str(), "eager");
    }

    #[test]
    fn incoming_ids_are_echoed_only_when_sane() {
        assert!(is_sane("01J0ABC-def_1.2"));
        assert!(!is_sane(""));
        assert!(!is_sane(&"a".repeat(65)));
        assert!(!is_sane("a b"));
        assert!(!is_sane("a\nb"));
    }
}
