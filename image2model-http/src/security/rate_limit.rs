//! Rate limits per client IP (GCRA buckets from `governor`).
//!
//! Two buckets: the upload bucket (`GET|POST /api/v1/upload`, per minute) and
//! the general bucket (every other `/api/v1` route, per hour). Every response
//! of a limited route carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset`; a refused request is **429** `rate_limited` with
//! `Retry-After`. Limits are checked before authentication, so guessing keys
//! is rate limited too.
//!
//! State lives in this process: with several instances each enforces its own
//! budget (see `docs/API-NOTES.md` on `REDIS_URL`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::client_ip::ClientIpResolver;
use crate::api::error::{ApiError, envelope};

type Limiter = DefaultKeyedRateLimiter<IpAddr, StateInformationMiddleware>;

/// One bucket family.
#[derive(Debug)]
struct Bucket {
    limiter: Limiter,
    quota: Quota,
}

impl Bucket {
    fn new(quota: Quota) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::<IpAddr>::keyed(quota)
                .with_middleware::<StateInformationMiddleware>(),
            quota,
        }
    }
}

/// The rate limits of one server.
#[derive(Debug, Clone)]
pub struct RateLimits {
    upload: Arc<Bucket>,
    general: Arc<Bucket>,
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
    /// Buckets of `upload_per_minute` and `general_per_hour` requests.
    #[must_use]
    pub fn new(upload_per_minute: u32, general_per_hour: u32, clients: ClientIpResolver) -> Self {
        let per_minute = NonZeroU32::new(upload_per_minute.max(1)).expect("at least 1");
        let per_hour = NonZeroU32::new(general_per_hour.max(1)).expect("at least 1");
        Self {
            upload: Arc::new(Bucket::new(Quota::per_minute(per_minute))),
            general: Arc::new(Bucket::new(Quota::per_hour(per_hour))),
            clients,
        }
    }

    /// The client IP resolver.
    #[must_use]
    pub fn clients(&self) -> &ClientIpResolver {
        &self.clients
    }

    fn bucket_for(&self, method: &Method, path: &str) -> Option<&Bucket> {
        if path == "/api/v1/upload" && (method == Method::GET || method == Method::POST) {
            Some(&self.upload)
        } else if path == "/api/v1" || path.starts_with("/api/v1/") {
            Some(&self.general)
        } else {
            None
        }
    }

    fn check(bucket: &Bucket, ip: IpAddr) -> Decision {
        let limit = bucket.quota.burst_size().get();
        let interval = bucket.quota.replenish_interval();
        match bucket.limiter.check_key(&ip) {
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
                let retry = ceil_secs(wait).max(1);
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_secs: ceil_secs(wait + interval * (limit - 1)),
                    retry_after_secs: retry,
                }
            }
        }
    }

    /// Forgets clients whose buckets are full again (bounds memory).
    pub fn retain_recent(&self) {
        self.upload.limiter.retain_recent();
        self.general.limiter.retain_recent();
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

impl<E: Endpoint> Middleware<E> for RateLimits {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RateLimitEndpoint {
            inner: ep,
            limits: self.clone(),
        }
    }
}

/// The endpoint made by [`RateLimits`].
#[derive(Debug)]
pub struct RateLimitEndpoint<E> {
    inner: E,
    limits: RateLimits,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let bucket = self.limits.bucket_for(req.method(), req.uri().path());
        let (Some(bucket), Some(ip)) = (bucket, self.limits.clients.resolve(&req)) else {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        };
        let decision = RateLimits::check(bucket, ip);
        if !decision.allowed {
            tracing::warn!(client_ip = %ip, path = %req.uri().path(), "rate limited");
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests; retry in {} s",
                    decision.retry_after_secs
                ),
            )
            .with_header(header::RETRY_AFTER, decision.retry_after_secs)
            .to_response();
            set_headers(&mut resp, &decision);
            return Ok(resp);
        }
        let mut resp = match self.inner.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => envelope(e),
        };
        set_headers(&mut resp, &decision);
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refuses_after_its_size_and_says_when_to_retry() {
        let limits = RateLimits::new(3, 100, ClientIpResolver::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let decisions: Vec<Decision> = (0..4)
            .map(|_| RateLimits::check(&limits.upload, ip))
            .collect();
        assert!(decisions[..3].iter().all(|d| d.allowed));
        assert_eq!(decisions[2].remaining, 0);
        assert!(!decisions[3].allowed);
        assert!(decisions[3].retry_after_secs >= 1 && decisions[3].retry_after_secs <= 20);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(RateLimits::check(&limits.upload, other).allowed);
    }

    #[test]
    fn routes_map_to_their_buckets() {
        let limits = RateLimits::new(3, 100, ClientIpResolver::default());
        assert!(std::ptr::eq(
            limits.bucket_for(&Method::POST, "/api/v1/upload").unwrap(),
            &*limits.upload
        ));
        assert!(std::ptr::eq(
            limits.bucket_for(&Method::GET, "/api/v1/jobs").unwrap(),
            &*limits.general
        ));
        assert!(limits.bucket_for(&Method::GET, "/health").is_none());
        assert!(limits.bucket_for(&Method::GET, "/").is_none());
    }
}
