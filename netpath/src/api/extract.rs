//! Extractors that answer every rejection with the API's JSON error (bad JSON,
//! unknown fields, wrong content type, bad path or query).

use super::*;

/// Whether the Content-Type is JSON (`application/json`, any parameters); `None` if absent.
pub(super) fn is_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    Some(essence.as_deref() == Some("application/json"))
}

/// Parses a request body as `T`, with the reason in the error message.
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<bool>,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request body: it is empty, expected a JSON object",
        ));
    }
    if content_type != Some(true) {
        let what = if content_type.is_none() {
            "missing Content-Type"
        } else {
            "unsupported Content-Type"
        };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{what}: the request body must be JSON"),
        )
        .hint("send the header `Content-Type: application/json`"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON in request body"
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => {
                "invalid request body"
            }
        };
        ApiError::new(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
    })
}

/// A JSON request body; every rejection is a JSON [`ApiError`].
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!("request body too large: the limit is {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::new(
                    status,
                    format!("cannot read the request body: {}", e.body_text()),
                )
            }
        })?;
        parse_json(content_type, &bytes).map(JsonBody)
    }
}

/// The single path parameter of a route; rejections are JSON.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map(|UrlPath(p)| PathParam(p))
            .map_err(|e| ApiError::new(e.status(), format!("invalid path: {}", e.body_text())))
    }
}

/// A query string; rejections (unknown parameters, bad values) are JSON.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid query string: {text}"),
                )
            })
    }
}
