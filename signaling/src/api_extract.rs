//! Extractors for the JSON API that reject bad input with the API's own
//! JSON errors (never axum's plain-text ones), and the signed-in staff member.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::http_error::ApiError;
use crate::idempotency::RequestFingerprint;
use crate::staff_auth::{API_AUDIENCE, AccessClaims};
use crate::store::{Clinician, StaffRole};

/// A JSON body; a malformed one is a 400 `invalid_body` (or 415 `unsupported_media_type`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a JSON body with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", short(&e.body_text()))),
        }
    }
}

/// A JSON body that may come with an `Idempotency-Key`: the parsed body and
/// the request's fingerprint (see [`crate::idempotency`]). Body errors are
/// those of [`ApiJson`].
pub struct IdempotentJson<T>(pub T, pub RequestFingerprint);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for IdempotentJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large"))?;
        let fingerprint = RequestFingerprint::new(&parts.headers, parts.method.as_str(), parts.uri.path(), &bytes)?;
        let ApiJson(value) = ApiJson::<T>::from_request(Request::from_parts(parts, bytes.into()), state).await?;
        Ok(IdempotentJson(value, fingerprint))
    }
}

/// Query parameters; malformed ones are a 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", short(&e.body_text())))
            }
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", short(&e.body_text()))),
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// The signed-in staff member, from `Authorization: Bearer <access token>`.
/// The account is re-read on every request, so disabling it takes effect at once.
#[derive(Debug, Clone)]
pub struct Staff(pub Clinician);

impl Staff {
    /// 403 `forbidden` unless the role is one of `roles`.
    pub fn require(&self, roles: &[StaffRole]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "your role may not do this"))
        }
    }

    /// Whether this staff member may act on a visit of `clinician_id`:
    /// their own visits, or any for an admin.
    pub fn may_act_on(&self, clinician_id: &str) -> bool {
        self.0.role == StaffRole::Admin || (self.0.role == StaffRole::Clinician && self.0.id == clinician_id)
    }
}

impl FromRequestParts<Arc<App>> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "sign in first");
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).ok_or_else(unauthorized)?;
        let claims: AccessClaims = match app.keys.verify(token.trim(), API_AUDIENCE) {
            Ok(c) => c,
            Err(crate::join_token::TokenError::Expired) => {
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "the access token has expired"));
            }
            Err(_) => return Err(unauthorized()),
        };
        let clinician =
            app.store.clinician_by_id(&claims.sub).await.map_err(ApiError::from)?.ok_or_else(unauthorized)?;
        if !clinician.active {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "account_disabled", "this account is disabled"));
        }
        Ok(Staff(clinician))
    }
}
