//! Rate limits per client IP: GCRA buckets, in this process (`governor`) or
//! shared by every instance through Redis (`REDIS_URL`).
//!
//! Three buckets: the upload bucket (`GET|POST /api/v1/upload`, default 10
//! per minute), the downloads bucket (`GET` of an item's `model` or
//! `preview` with a key, default 1000 per hour; see [`BucketKind::Downloads`]
//! for why) and the general bucket (every other `/api/v1` route, default
//! 100 per hour). A bucket of `limit` requests per `window` lets exactly `limit`
//! requests through at once and then one more every `window / limit` (the
//! generic cell rate algorithm: no burst at a window edge, unlike fixed
//! windows). Every response of a limited route carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the bucket is
//! full again); a refused request is **429** `rate_limited` with
//! `Retry-After` (seconds until the next request passes). Limits are checked
//! before authentication, so guessing keys is rate limited too. The client IP
//! comes from [`ClientIpResolver`] (forwarding headers only from
//! `TRUSTED_PROXIES`); IPv6 clients are counted per /64.
//!
//! ## Shared limits (`REDIS_URL`)
//!
//! With Redis, one Lua script runs the same GCRA atomically on the server
//! (one key per bucket and IP holding the "theoretical arrival time", with
//! Redis's own clock, expiring when the bucket is full again), so every
//! instance draws from one budget. If Redis does not answer (250 ms), the
//! request is checked against this process's own buckets instead: the server
//! **fails open to per-instance limits**, never to no limits, and never
//! refuses service because a cache is down. The switch is logged once per
//! outage (warn), and the recovery once (info).

use image2model_core::ErrorCode;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::http::{HeaderName, HeaderValue, Method, header};
use poem::{Request, Response};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use super::client_ip::ClientIpResolver;
use crate::error::ApiError;
use crate::routes::{UPLOAD_PATH, api_path};

type Limiter = DefaultKeyedRateLimiter<IpAddr, StateInformationMiddleware>;

/// How long a Redis check may take before the local bucket decides.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// One bucket's size and the time it takes to refill completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Requests allowed at once (at least 1).
    pub limit: u32,
    /// Time for an empty bucket to refill (at least 1 ms).
    pub window: Duration,
}

impl Rule {
    /// `limit` requests per `window`.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
        }
    }

    /// The time one request's slot takes to come back.
    fn interval(self) -> Duration {
        self.window / self.limit
    }
}

/// Everything the limiter needs, from the configuration.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The upload bucket (`GET|POST /api/v1/upload`).
    pub upload: Rule,
    /// The general bucket (every other `/api/v1` route).
    pub general: Rule,
    /// The downloads bucket (`GET …/items/{item_id}/model|preview`).
    pub downloads: Rule,
    /// `REDIS_URL`: share buckets through this Redis.
    pub redis_url: Option<SecretString>,
    /// Prefix of the Redis keys (instances sharing budgets use the same one).
    pub redis_prefix: String,
}

impl RateLimitSettings {
    /// The contract's buckets: `upload_per_minute` per minute and
    /// `general_per_hour` per hour, and downloads at
    /// [`DEFAULT_DOWNLOADS_PER_HOUR`] per hour, without Redis.
    #[must_use]
    pub fn new(upload_per_minute: u32, general_per_hour: u32) -> Self {
        Self {
            upload: Rule::new(upload_per_minute, Duration::from_secs(60)),
            general: Rule::new(general_per_hour, Duration::from_secs(3600)),
            downloads: Rule::new(DEFAULT_DOWNLOADS_PER_HOUR, Duration::from_secs(3600)),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
        }
    }
}

/// `RATE_LIMIT_DOWNLOADS_PER_HOUR`'s default: ten times the general
/// bucket's, so that a person's session (a preview and a download of each
/// of dozens of models) never meets it, while a client looping on
/// downloads still does.
pub const DEFAULT_DOWNLOADS_PER_HOUR: u32 = 1000;

/// The default prefix of Redis keys.
pub const DEFAULT_REDIS_PREFIX: &str = "image2model:ratelimit";

/// Which bucket a route draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    /// `GET|POST /api/v1/upload`.
    Upload,
    /// Every other `/api/v1` route.
    General,
    /// `GET /api/v1/jobs/{job_id}/items/{item_id}/model` and `…/preview`:
    /// fetching results already made. A person's page fetches one model
    /// (and maybe one preview) per image, so a day's use is hundreds of
    /// these: in the general bucket they would spend the budget that guards
    /// the rest of the API. They cost no generation and stream from the
    /// blob store; they still take a key (a guess is 401, and guesses here
    /// are bounded by this bucket, against keys too long to guess) and are
    /// still limited per IP. Signed links (`/links/…`) take no key and stay
    /// in the general bucket.
    Downloads,
}

impl BucketKind {
    fn as_str(self) -> &'static str {
        match self {
            BucketKind::Upload => "upload",
            BucketKind::General => "general",
            BucketKind::Downloads => "downloads",
        }
    }

    /// The bucket of a request, or `None` for routes that are not limited.
    #[must_use]
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        match api_path(path)? {
            UPLOAD_PATH if method == Method::GET || method == Method::POST => {
                Some(BucketKind::Upload)
            }
            path if method == Method::GET && is_result_download(path) => {
                Some(BucketKind::Downloads)
            }
            _ => Some(BucketKind::General),
        }
    }
}

/// `/jobs/{job_id}/items/{item_id}/model` or `…/preview` (any id text: a
/// malformed id is the handler's 404, counted here all the same).
fn is_result_download(path: &str) -> bool {
    let mut parts = path.strip_prefix('/').unwrap_or(path).split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some("jobs"),
            Some(job),
            Some("items"),
            Some(item),
            Some("model" | "preview"),
            None
        ) if !job.is_empty() && !item.is_empty()
    )
}

/// One bucket family kept in this process.
#[derive(Debug)]
struct LocalBucket {
    limiter: Limiter,
    rule: Rule,
}

impl LocalBucket {
    fn new(rule: Rule) -> Self {
        let burst = NonZeroU32::new(rule.limit).expect("Rule keeps limit >= 1");
        let quota = Quota::with_period(rule.interval().max(Duration::from_nanos(1)))
            .expect("a non-zero period")
            .allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::<IpAddr>::keyed(quota)
                .with_middleware::<StateInformationMiddleware>(),
            rule,
        }
    }

    fn check(&self, ip: IpAddr) -> Decision {
        let limit = self.rule.limit;
        let interval = self.rule.interval();
        match self.limiter.check_key(&ip) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_secs: ceil_secs(interval * (limit - remaining)),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_secs: ceil_secs(wait + interval * (limit - 1)),
                    retry_after_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }
}

/// GCRA on Redis. KEYS[1]: the bucket key. ARGV: burst, emission interval
/// (µs). Returns {allowed, remaining, retry after (µs), reset (µs)}. Times
/// come from Redis's clock so instances with skewed clocks agree.
const GCRA_SCRIPT: &str = r"
local burst = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + burst * interval - new_tat) / interval), 0, new_tat - now}
";

/// The Redis side of shared limits.
struct Shared {
    manager: ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// Whether the last check fell back to local buckets (logs transitions once).
    degraded: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .field("degraded", &self.degraded)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn connect(url: &SecretString, prefix: String) -> Result<Self, String> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| format!("REDIS_URL: not a Redis URL ({})", e.kind_str()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("REDIS_URL: {}", e.kind_str()))?;
        Ok(Self {
            manager,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix,
            degraded: AtomicBool::new(false),
        })
    }

    async fn check(
        &self,
        kind: BucketKind,
        rule: Rule,
        ip: IpAddr,
    ) -> redis::RedisResult<Decision> {
        let key = format!("{}:{}:{}", self.prefix, kind.as_str(), ip);
        let interval_us = u64::try_from(rule.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.manager.clone();
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(rule.limit)
            .arg(interval_us)
            .invoke_async(&mut conn)
            .await?;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: rule.limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            reset_secs: ceil_secs(micros(reset_us)),
            retry_after_secs: if allowed == 1 {
                0
            } else {
                ceil_secs(micros(retry_us)).max(1)
            },
        })
    }
}

/// Short, secret-free names for Redis errors (a message could quote a URL).
trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        if self.is_timeout() {
            "timeout".to_owned()
        } else if self.is_connection_refusal() {
            "connection refused".to_owned()
        } else if self.is_connection_dropped() {
            "connection dropped".to_owned()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

/// The rate limits of one server.
#[derive(Debug, Clone)]
pub struct RateLimits {
    upload: Arc<LocalBucket>,
    general: Arc<LocalBucket>,
    downloads: Arc<LocalBucket>,
    shared: Option<Arc<Shared>>,
    clients: ClientIpResolver,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket size.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (refused requests).
    pub retry_after_secs: u64,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RateLimits {
    /// Buckets of `upload_per_minute` and `general_per_hour` requests, kept
    /// in this process.
    #[must_use]
    pub fn new(upload_per_minute: u32, general_per_hour: u32, clients: ClientIpResolver) -> Self {
        Self::with_settings(
            &RateLimitSettings::new(upload_per_minute, general_per_hour),
            clients,
        )
        .expect("no Redis URL to parse")
    }

    /// Buckets as `settings` say, shared through Redis when a URL is given
    /// (connected lazily: a Redis that is down at start-up only means local
    /// buckets until it answers).
    ///
    /// # Errors
    /// A message (without the URL) when `redis_url` is not a Redis URL.
    pub fn with_settings(
        settings: &RateLimitSettings,
        clients: ClientIpResolver,
    ) -> Result<Self, String> {
        let shared = match &settings.redis_url {
            Some(url) => Some(Arc::new(Shared::connect(
                url,
                settings.redis_prefix.clone(),
            )?)),
            None => None,
        };
        Ok(Self {
            upload: Arc::new(LocalBucket::new(settings.upload)),
            general: Arc::new(LocalBucket::new(settings.general)),
            downloads: Arc::new(LocalBucket::new(settings.downloads)),
            shared,
            clients,
        })
    }

    /// The client IP resolver.
    #[must_use]
    pub fn clients(&self) -> &ClientIpResolver {
        &self.clients
    }

    /// Whether buckets are shared through Redis.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn local(&self, kind: BucketKind) -> &LocalBucket {
        match kind {
            BucketKind::Upload => &self.upload,
            BucketKind::General => &self.general,
            BucketKind::Downloads => &self.downloads,
        }
    }

    /// Takes one request from `ip`'s bucket of `kind`. IPv6 clients are
    /// counted per /64 (see [`bucket_address`]).
    pub async fn check(&self, kind: BucketKind, ip: IpAddr) -> Decision {
        let ip = bucket_address(ip);
        let local = self.local(kind);
        if let Some(shared) = &self.shared {
            // Boxed: the Redis round trip's future is large, and would
            // otherwise be part of every request's future, Redis or not.
            let outcome = Box::pin(tokio::time::timeout(
                REDIS_TIMEOUT,
                shared.check(kind, local.rule, ip),
            ))
            .await;
            match outcome {
                Ok(Ok(decision)) => {
                    if shared.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis answers again: rate limits are shared again");
                    }
                    return decision;
                }
                Ok(Err(e)) => {
                    if !shared.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e.kind_str(),
                            "Redis unavailable: rate limits fall back to this instance's own buckets"
                        );
                    }
                }
                Err(_) => {
                    if !shared.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = "timeout",
                            "Redis unavailable: rate limits fall back to this instance's own buckets"
                        );
                    }
                }
            }
        }
        local.check(ip)
    }

    /// Forgets clients whose local buckets are full again (bounds memory).
    pub fn retain_recent(&self) {
        self.upload.limiter.retain_recent();
        self.general.limiter.retain_recent();
        self.downloads.limiter.retain_recent();
    }
}

/// The address a client's requests are counted under: an IPv4 address as
/// it is, an IPv6 address by its /64 network. One IPv6 subscriber usually
/// holds a whole /64 (2^64 addresses), so counting single addresses would let
/// a client take a fresh budget with every request.
#[must_use]
pub fn bucket_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn set_headers(resp: &mut Response, d: &Decision) {
    let h = resp.headers_mut();
    h.insert(LIMIT, HeaderValue::from(d.limit));
    h.insert(REMAINING, HeaderValue::from(d.remaining));
    h.insert(RESET, HeaderValue::from(d.reset_secs));
}

impl RateLimits {
    /// Takes `req` from its client's bucket. `Ok` carries the decision to report with
    /// [`RateLimits::report`] on the response (`None`: the request is not
    /// limited, e.g. a probe, or its peer is not an IP socket).
    ///
    /// # Errors
    /// The `429 rate_limited` response (with `Retry-After` and the
    /// `RateLimit-*` headers) when the bucket is empty.
    pub async fn admit(&self, req: &Request) -> Result<Option<Decision>, Response> {
        let kind = BucketKind::of(req.method(), req.uri().path());
        let ip = self.clients.client_ip(req);
        let (Some(kind), Some(ip)) = (kind, ip) else {
            return Ok(None);
        };
        let decision = self.check(kind, ip).await;
        if decision.allowed {
            return Ok(Some(decision));
        }
        tracing::warn!(client_ip = %ip, bucket = kind.as_str(), "rate limited");
        let mut resp = ApiError::of(
            ErrorCode::RateLimited,
            format!(
                "too many requests; retry in {} s",
                decision.retry_after_secs
            ),
        )
        .with_header(header::RETRY_AFTER, decision.retry_after_secs)
        .to_response();
        set_headers(&mut resp, &decision);
        Err(resp)
    }

    /// Sets the `RateLimit-*` headers of `decision` on `resp`.
    pub fn report(decision: Option<&Decision>, resp: &mut Response) {
        if let Some(d) = decision {
            set_headers(resp, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn exactly_the_limit_passes_then_retry_after_is_one_interval() {
        let limits = RateLimits::new(3, 100, ClientIpResolver::default());

        let mut decisions = Vec::new();
        for _ in 0..4 {
            decisions.push(limits.check(BucketKind::Upload, ip("192.0.2.1")).await);
        }

        assert!(decisions[..3].iter().all(|d| d.allowed));
        assert_eq!(
            decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(!decisions[3].allowed);
        // 3 per minute: a slot comes back every 20 s.
        assert!((19..=20).contains(&decisions[3].retry_after_secs));
        assert!((59..=60).contains(&decisions[3].reset_secs));
        assert_eq!(decisions[0].reset_secs, 20);
    }

    #[tokio::test]
    async fn buckets_are_per_ip_and_per_kind() {
        let limits = RateLimits::new(1, 1, ClientIpResolver::default());

        let first = limits.check(BucketKind::Upload, ip("192.0.2.1")).await;
        let again = limits.check(BucketKind::Upload, ip("192.0.2.1")).await;
        let other_ip = limits.check(BucketKind::Upload, ip("192.0.2.2")).await;
        let other_kind = limits.check(BucketKind::General, ip("192.0.2.1")).await;

        assert!(first.allowed && !again.allowed);
        assert!(other_ip.allowed);
        assert!(other_kind.allowed);
    }

    #[tokio::test]
    async fn ipv6_clients_share_a_bucket_per_64() {
        let limits = RateLimits::new(1, 1, ClientIpResolver::default());

        let first = limits
            .check(BucketKind::Upload, ip("2001:db8:1:2::1"))
            .await;
        let same_64 = limits
            .check(BucketKind::Upload, ip("2001:db8:1:2:ffff::9"))
            .await;
        let other_64 = limits
            .check(BucketKind::Upload, ip("2001:db8:1:3::1"))
            .await;

        assert!(first.allowed);
        assert!(!same_64.allowed, "another address of the same /64");
        assert!(other_64.allowed);
        assert_eq!(
            bucket_address(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7"),
            "mapped IPv4 counts as IPv4"
        );
    }

    #[test]
    fn routes_map_to_their_buckets() {
        assert_eq!(
            BucketKind::of(&Method::POST, "/api/v1/upload"),
            Some(BucketKind::Upload)
        );
        assert_eq!(
            BucketKind::of(&Method::GET, "/api/v1/upload"),
            Some(BucketKind::Upload)
        );
        assert_eq!(
            BucketKind::of(&Method::DELETE, "/api/v1/upload"),
            Some(BucketKind::General)
        );
        assert_eq!(
            BucketKind::of(&Method::GET, "/api/v1/jobs"),
            Some(BucketKind::General)
        );
        let model = "/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/items/01ARZ3NDEKTSV4RRFFQ69G5FAW";
        assert_eq!(
            BucketKind::of(&Method::GET, &format!("{model}/model")),
            Some(BucketKind::Downloads)
        );
        assert_eq!(
            BucketKind::of(&Method::GET, &format!("{model}/preview")),
            Some(BucketKind::Downloads)
        );
        assert_eq!(
            BucketKind::of(&Method::POST, &format!("{model}/link")),
            Some(BucketKind::General),
            "making a link is not a download"
        );
        assert_eq!(
            BucketKind::of(&Method::GET, &format!("{model}/model/x")),
            Some(BucketKind::General)
        );
        assert_eq!(
            BucketKind::of(&Method::GET, "/api/v1/links/a/b/glb"),
            Some(BucketKind::General),
            "links take no key: the general bucket guards them"
        );
        assert_eq!(BucketKind::of(&Method::GET, "/health"), None);
        assert_eq!(BucketKind::of(&Method::GET, "/"), None);
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_echoing_it() {
        let mut settings = RateLimitSettings::new(1, 1);
        settings.redis_url = Some("nope://:hunter2@x".into());

        let err = RateLimits::with_settings(&settings, ClientIpResolver::default()).unwrap_err();

        assert!(err.contains("REDIS_URL"));
        assert!(!err.contains("hunter2"));
    }
}
