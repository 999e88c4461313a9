//! The API's error answer (a status, a message and the field it is about) and the parsing
//! of request bodies and query parameters into it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::Error;

/// An API error: a status and a message, with the offending field when there is one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// What is wrong.
    pub error: String,
    /// The field it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
        }
    }
    pub(crate) fn field(
        status: StatusCode,
        field: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Self {
            status,
            error: format!("{field}: {}", error.into()),
            field: Some(field),
        }
    }
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
    pub(crate) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::NotLeader => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = axum::Json(&self).into_response();
        *response.status_mut() = self.status;
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body, naming the field that is wrong.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body: expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        // serde names a missing or unknown field in its message, not in the path.
        let field = [("missing field `", '`'), ("unknown field `", '`')]
            .iter()
            .find_map(|(prefix, end)| {
                let rest = message.split_once(prefix)?.1;
                Some(rest.split(*end).next()?.to_string())
            });
        let field = match (path.as_str(), field) {
            (".", Some(f)) => f,
            (".", None) => "request body".to_string(),
            (p, _) => p.to_string(),
        };
        ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, field, message)
    })
}

pub(crate) fn parse_query_u64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    name,
                    format!("{v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

pub(crate) fn limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    Ok(parse_query_u64(q, "limit")?.unwrap_or(100).min(10_000) as usize)
}
