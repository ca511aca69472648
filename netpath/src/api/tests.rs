//! The router and extractors, request by request.

use super::*;

fn err<T: std::fmt::Debug>(r: Result<T, ApiError>) -> ApiError {
    r.expect_err("must fail")
}

#[test]
fn valid_body_parses() {
    let req: NetworkCreate =
        parse_json(Some(true), br#"{"name":"a","subnet":"10.1.0.0/24"}"#).unwrap();
    assert_eq!(req.name, "a");
}

#[test]
fn malformed_json_is_400_with_reason() {
    let e = err(parse_json::<NetworkCreate>(Some(true), b"{\"name\":"));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(
        e.body.error.starts_with("malformed JSON in request body: "),
        "{}",
        e.body.error
    );
    let e = err(parse_json::<NetworkCreate>(Some(true), b"{nope}"));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.body.error.contains("line 1 column 2"), "{}", e.body.error);
}

#[test]
fn unknown_field_is_400_naming_it_and_the_expected_ones() {
    let e = err(parse_json::<NetworkCreate>(
        Some(true),
        br#"{"name":"a","subnet":"10.1.0.0/24","foo":1}"#,
    ));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(
        e.body
            .error
            .starts_with("invalid request body: unknown field `foo`, expected one of `name`"),
        "{}",
        e.body.error
    );
}

#[test]
fn wrong_type_and_missing_field_are_400() {
    let e = err(parse_json::<TapCreate>(
        Some(true),
        br#"{"network":"a","name":"t","queues":"many"}"#,
    ));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(
        e.body
            .error
            .starts_with("invalid request body: invalid type: string \"many\""),
        "{}",
        e.body.error
    );
    let e = err(parse_json::<TapCreate>(Some(true), br#"{"network":"a"}"#));
    assert!(
        e.body.error.contains("missing field `name`"),
        "{}",
        e.body.error
    );
    let e = err(parse_json::<NetworkCreate>(
        Some(true),
        br#"{"name":"a","subnet":"10.1.0.300/24"}"#,
    ));
    assert!(
        e.body.error.starts_with("invalid request body: "),
        "{}",
        e.body.error
    );
}

#[test]
fn empty_body_and_wrong_content_type() {
    let e = err(parse_json::<NetworkCreate>(Some(true), b" \n"));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.body.error.contains("empty"));
    let e = err(parse_json::<NetworkCreate>(Some(false), b"{}"));
    assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(e.body.hint.unwrap().contains("application/json"));
    let e = err(parse_json::<NetworkCreate>(None, b"{}"));
    assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(e.body.error.starts_with("missing Content-Type"));
}

#[test]
fn content_type_essence_is_matched() {
    let mut h = HeaderMap::new();
    assert_eq!(is_json(&h), None);
    h.insert(
        header::CONTENT_TYPE,
        "Application/JSON; charset=utf-8".parse().unwrap(),
    );
    assert_eq!(is_json(&h), Some(true));
    h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(is_json(&h), Some(false));
}
