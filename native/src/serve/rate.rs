//! Request rates: per client IP (checked before authentication, so a flood of bad tokens is
//! bounded too) and per token, each a keyed GCRA bucket of the `governor` crate (a rate per
//! second and a burst). Over the rate: 429 `too_many_requests` with `Retry-After`.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// A rate: requests per second, and how many may come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second (0: no limit).
    pub per_second: u32,
    /// Requests at once.
    pub burst: u32,
}

impl Rate {
    fn limiter<K: Hash + Eq + Clone>(self) -> Option<Keyed<K>> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(RateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ))
    }
}

/// The server's request rates.
pub struct Rates {
    per_ip: Option<Keyed<IpAddr>>,
    per_token: Option<Keyed<String>>,
}

impl Rates {
    /// Limits per client IP and per token.
    pub fn new(ip: Rate, token: Rate) -> Self {
        Self {
            per_ip: ip.limiter(),
            per_token: token.limiter(),
        }
    }

    /// Forget the keys whose buckets are full again (bounds the tables' memory).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_token {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// `Ok`, or 429 saying `who` is over its rate, with the seconds until the next request passes.
fn check<K: Hash + Eq + Clone>(limiter: &Keyed<K>, key: &K, who: &str) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            format!("{who} sends requests faster than this server takes them; slow down"),
        )
        .retry_after(seconds.max(1))
    })
}

/// Middleware (outside authentication): the client IP's rate.
pub async fn limit_ip(State(rates): State<Arc<Rates>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let (Some(limiter), Some(ip)) = (&rates.per_ip, peer)
        && let Err(error) = check(limiter, &ip, &format!("the client {ip}"))
    {
        return error.into_response();
    }
    next.run(request).await
}

/// Middleware (inside authentication): the token's rate.
pub async fn limit_token(
    State(rates): State<Arc<Rates>>,
    request: Request,
    next: Next,
) -> Response {
    let name = request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.name.clone());
    if let (Some(limiter), Some(name)) = (&rates.per_token, name)
        && let Err(error) = check(limiter, &name, &format!("the token `{name}`"))
    {
        return error.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_429_with_the_wait() {
        let rates = Rates::new(
            Rate {
                per_second: 1,
                burst: 3,
            },
            Rate {
                per_second: 0,
                burst: 10,
            },
        );
        assert!(rates.per_token.is_none(), "rate 0 is no limit");
        let limiter = rates.per_ip.as_ref().unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            check(limiter, &ip, "x").unwrap();
        }
        let error = check(limiter, &ip, "the client 192.0.2.7").unwrap_err();
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.retry_after, Some(1));
        assert!(
            error
                .detail
                .message
                .starts_with("the client 192.0.2.7 sends")
        );
        // Another client has its own bucket.
        check(limiter, &"192.0.2.8".parse().unwrap(), "y").unwrap();
        rates.forget_idle();
    }
}
