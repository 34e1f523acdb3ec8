//! `/api/auth/*`: staff sign-in, refresh, sign-out.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api_extract::{ApiJson, Staff};
use crate::app::App;
use crate::client_addr::ClientAddr;
use crate::http_error::ApiError;
use crate::join_token::ISSUER;
use crate::security_log::SecurityEvent;
use crate::staff_auth::{
    ACCESS_TTL_SECS, ACCOUNT_FREE_FAILURES, ADDRESS_FREE_FAILURES, API_AUDIENCE, AccessClaims, REFRESH_COOKIE,
    REFRESH_TTL_SECS, token_hash, verify_dummy, verify_password,
};
use crate::store::{Clinician, RefreshToken, Rotation};

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// Account email.
    pub email: String,
    /// Password.
    pub password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password")
}

/// The sign-in throttle: this node's own, and in a cluster also the one
/// every node shares in Redis (guesses spread over the nodes count
/// together); the longer wait wins. A Redis failure leaves this node's own,
/// so an outage never lifts the throttle.
struct SignInThrottle<'a>(&'a App);

impl SignInThrottle<'_> {
    fn now_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    async fn wait(&self, keys: &[(&str, u32)]) -> Option<std::time::Duration> {
        let here = self.0.login_throttle.retry_after(keys, Instant::now());
        let Some(cluster) = &self.0.cluster else { return here };
        match cluster.sign_in_wait(keys, Self::now_ms()).await {
            Ok(shared) => here.max(shared),
            Err(e) => {
                tracing::warn!(error = %e, "shared sign-in throttle unavailable; this node's applies");
                here
            }
        }
    }

    async fn failed(&self, keys: &[(&str, u32)]) {
        self.0.login_throttle.failed(keys, Instant::now());
        if let Some(cluster) = &self.0.cluster
            && let Err(e) = cluster.sign_in_failed(keys, Self::now_ms()).await
        {
            tracing::warn!(error = %e, "could not count a failed sign-in in the shared throttle");
        }
    }

    async fn forgive(&self, key: &str) {
        self.0.login_throttle.forgive(key);
        if let Some(cluster) = &self.0.cluster {
            let _ = cluster.sign_in_forgive(key).await;
        }
    }

    async fn succeeded(&self, key: &str) {
        self.0.login_throttle.succeeded(key);
        if let Some(cluster) = &self.0.cluster {
            let _ = cluster.sign_in_succeeded(key).await;
        }
    }
}

/// Signs in. The same answer, in the same time, for an unknown email and a
/// wrong password. Each attempt counts against the account and the client
/// address from the moment it starts (a success takes it back), and
/// password checks run a few at a time: a flood of guesses meets the
/// throttle, then a quick 503, never a queue that eats the media threads.
pub async fn login(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = body.email.trim().to_lowercase();
    if email.len() > 320 || body.password.len() > 1024 {
        return Err(invalid_credentials());
    }
    let email_key = format!("email:{email}");
    let address_key = format!("ip:{client}");
    let keys = [(email_key.as_str(), ACCOUNT_FREE_FAILURES), (address_key.as_str(), ADDRESS_FREE_FAILURES)];
    let who = app.security.pseudonym(&email);
    let throttle = SignInThrottle(&app);
    if let Some(wait) = throttle.wait(&keys).await {
        app.security.record(app.clock.now(), SecurityEvent::SignInThrottled, Some(client), json!({ "email": who }));
        // Rounded up, so that waiting exactly this long is always enough.
        let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed sign-ins; try again in {secs} s"),
        )
        .retry_after(secs));
    }
    throttle.failed(&keys).await;
    let account = app.store.clinician_by_email(&email).await?;
    let password = body.password.clone();
    let checked = app
        .password_checks
        .run(move || match &account {
            Some(c) => verify_password(&c.password_hash, &password).then(|| c.clone()),
            None => {
                verify_dummy(&password);
                None
            }
        })
        .await;
    let Some(outcome) = checked else {
        // Not the user's fault: the attempt does not count.
        throttle.forgive(&email_key).await;
        throttle.forgive(&address_key).await;
        app.security.record(app.clock.now(), SecurityEvent::SignInBusy, Some(client), json!({ "email": who }));
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sign_in_busy",
            "too many sign-ins at once; try again in a moment",
        )
        .retry_after(1));
    };
    let Some(clinician) = outcome.filter(|c| c.active) else {
        app.security.record(app.clock.now(), SecurityEvent::SignInFailed, Some(client), json!({ "email": who }));
        return Err(invalid_credentials());
    };
    throttle.succeeded(&email_key).await;
    throttle.forgive(&address_key).await;
    let family = crate::secret::random_id("rf");
    issue_session(&app, &clinician, &family).await
}

/// Rotates the refresh cookie and returns a new access token. A refresh
/// token used twice revokes its whole family (it must have leaked).
pub async fn refresh(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_refresh", "sign in again");
    let token = refresh_cookie(&headers).ok_or_else(unauthorized)?;
    let now = app.clock.now();
    let new_token = crate::secret::random_token();
    let rotation = app
        .store
        .rotate_refresh_token(
            &token_hash(&token),
            &crate::secret::random_id("r"),
            &token_hash(&new_token),
            now + REFRESH_TTL_SECS,
            now,
        )
        .await?;
    let old = match rotation {
        Rotation::Rotated(old) => old,
        Rotation::Replayed => {
            app.security.record(now, SecurityEvent::RefreshReplayed, Some(client), json!({}));
            return Err(unauthorized());
        }
        Rotation::Unknown => return Err(unauthorized()),
    };
    let clinician =
        app.store.clinician_by_id(&old.clinician_id).await?.filter(|c| c.active).ok_or_else(unauthorized)?;
    session_response(&app, &clinician, &new_token)
}

/// Revokes the refresh token's family and clears the cookie.
pub async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = refresh_cookie(&headers) {
        app.store.revoke_refresh_family(&token_hash(&token), app.clock.now()).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tc_refresh=; Path=/api/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    );
    Ok(response)
}

/// The signed-in account.
pub async fn me(staff: Staff) -> Json<serde_json::Value> {
    Json(json!({ "clinician": staff.0 }))
}

async fn issue_session(app: &App, clinician: &Clinician, family: &str) -> Result<Response, ApiError> {
    let now = app.clock.now();
    let token = crate::secret::random_token();
    let record = RefreshToken {
        id: crate::secret::random_id("r"),
        clinician_id: clinician.id.clone(),
        family_id: family.to_string(),
        expires_at: now + REFRESH_TTL_SECS,
        used_at: None,
        revoked_at: None,
    };
    app.store.insert_refresh_token(&record, &token_hash(&token), now).await?;
    session_response(app, clinician, &token)
}

fn session_response(app: &App, clinician: &Clinician, refresh_token: &str) -> Result<Response, ApiError> {
    let now = crate::join_token::unix_now();
    let claims = AccessClaims {
        iss: ISSUER.into(),
        aud: API_AUDIENCE.into(),
        sub: clinician.id.clone(),
        role: clinician.role,
        iat: now,
        nbf: now,
        exp: now + ACCESS_TTL_SECS,
    };
    let access = app.keys.sign(&claims).map_err(ApiError::internal)?;
    let cookie = format!(
        "{REFRESH_COOKIE}={refresh_token}; Path=/api/auth; Max-Age={REFRESH_TTL_SECS}; HttpOnly; Secure; SameSite=Strict"
    );
    let mut response =
        Json(json!({ "access_token": access, "expires_in": ACCESS_TTL_SECS, "clinician": clinician })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The refresh token from the `Cookie` header.
fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == REFRESH_COOKIE && !value.is_empty()).then(|| value.to_string())
        })
    })
}
