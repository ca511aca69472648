//! [`ApiError`]: every failure as a status and a JSON body; the HTTP status of each
//! service error is decided here.

use super::*;

/// A failed request: the HTTP status and the JSON body sent with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ApiErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ApiErrorBody {
                error: error.into(),
                hint: None,
            },
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.body.hint = Some(hint.into());
        self
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError {
            status: status_of(&e),
            body: ApiErrorBody {
                error: crate::error::chain(&e),
                hint: e.hint(),
            },
        }
    }
}

/// The HTTP status of a service error: 400 bad input, 404 unknown resource, 409 conflict,
/// 500 internal. (The service says what went wrong; how HTTP puts it is decided here.)
pub(super) fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Conflict { .. } => StatusCode::CONFLICT,
        ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
        ServiceError::State(e) => match e {
            StateError::NetworkNotFound { .. } | StateError::EndpointNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            StateError::NetworkExists { .. }
            | StateError::SubnetOverlap { .. }
            | StateError::NetworkInUse { .. }
            | StateError::IpInUse { .. }
            | StateError::SubnetExhausted { .. }
            | StateError::BridgeFull { .. }
            | StateError::EndpointExists { .. }
            | StateError::HostIfnameInUse { .. }
            | StateError::NetworkIdsExhausted
            | StateError::PortInUse { .. }
            | StateError::HostPortInUse { .. }
            | StateError::PortsExhausted { .. } => StatusCode::CONFLICT,
            StateError::InvalidSubnet { .. }
            | StateError::InvalidGateway { .. }
            | StateError::InvalidIp { .. }
            | StateError::InvalidEndpointId { .. }
            | StateError::NoIpv4 { .. }
            | StateError::NoIpv6 { .. }
            | StateError::EndpointWithoutFamily { .. }
            | StateError::AmbiguousEndpointId { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        ServiceError::Tap(TapError::Exists { .. }) => StatusCode::CONFLICT,
        ServiceError::Tap(TapError::InvalidName { .. }) => StatusCode::BAD_REQUEST,
        ServiceError::Sandbox(
            SandboxError::Netns { .. }
            | SandboxError::NetnsMissing { .. }
            | SandboxError::NetnsDenied { .. }
            | SandboxError::NotNetns { .. }
            | SandboxError::HostNetns { .. }
            | SandboxError::Ipv6Disabled { .. },
        ) => StatusCode::BAD_REQUEST,
        ServiceError::Sandbox(
            SandboxError::IfnameExists { .. } | SandboxError::HostIfnameExists { .. },
        ) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self.body)).into_response();
        // Lets `add_allow_hint` complete a 405 body once axum has set `Allow`.
        response.extensions_mut().insert(self.body);
        response
    }
}
