//! The daemon's error: a message for people and the HTTP status that goes with it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_plan::error::{ErrorKind, PlanError};

/// An API error: rendered as Docker's `{"message": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
    /// 503: what a dockerd outside any swarm answers to the swarm endpoints.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
    /// 500: something on the host failed; the message says what was being done.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> ApiError {
        let status = match e.kind() {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<berth_store::StoreError> for ApiError {
    fn from(e: berth_store::StoreError) -> ApiError {
        match e {
            // The cluster store is down: the change needs it, try again when it is back.
            berth_store::StoreError::Unavailable { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<berth_kernel::error::KernelError> for ApiError {
    fn from(e: berth_kernel::error::KernelError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::info!(status = %self.status, "{}", self.message);
        }
        (
            self.status,
            Json(berth_api::types::ErrorResponse {
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
