//! The router and extractors, request by request.

use super::*;

#[test]
fn valid_body_parses() {
    let req: NetworkCreate =
        parse_json(Some(true), br#"{"name":"a","subnet":"10.1.0.0/24"}"#).unwrap();
    assert_eq!(req.name, "a");
}

/// What a rejection must say.
#[derive(Debug)]
enum Says {
    /// Its message starts with this.
    Starts(&'static str),
    /// Its message has this somewhere.
    Has(&'static str),
    /// Its hint has this.
    Hints(&'static str),
}

/// The error `parse_json` answers `body` with, parsed as a `T`.
fn rejection<T: DeserializeOwned + std::fmt::Debug>(
    content_type: Option<bool>,
    body: &[u8],
) -> ApiError {
    parse_json::<T>(content_type, body).expect_err("must fail")
}

/// A body `parse_json` must refuse: the parser (of which type), the Content-Type (JSON or
/// not, `None` if absent), the body, and the status and reason of the refusal.
type Refusal = (
    fn(Option<bool>, &[u8]) -> ApiError,
    Option<bool>,
    &'static [u8],
    StatusCode,
    Says,
);

#[test]
fn bad_bodies_are_refused_with_their_status_and_reason() {
    use Says::*;
    let network = rejection::<NetworkCreate>;
    let tap = rejection::<TapCreate>;
    let json = Some(true);
    let cases: &[Refusal] = &[
        // Malformed JSON, with the reason.
        (
            network,
            json,
            b"{\"name\":",
            StatusCode::BAD_REQUEST,
            Starts("malformed JSON in request body: "),
        ),
        (
            network,
            json,
            b"{nope}",
            StatusCode::BAD_REQUEST,
            Has("line 1 column 2"),
        ),
        // An unknown field, named, with the expected ones.
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.0/24","foo":1}"#,
            StatusCode::BAD_REQUEST,
            Starts("invalid request body: unknown field `foo`, expected one of `name`"),
        ),
        // A wrong type, a missing field, a bad value.
        (
            tap,
            json,
            br#"{"network":"a","name":"t","queues":"many"}"#,
            StatusCode::BAD_REQUEST,
            Starts("invalid request body: invalid type: string \"many\""),
        ),
        (
            tap,
            json,
            br#"{"network":"a"}"#,
            StatusCode::BAD_REQUEST,
            Has("missing field `name`"),
        ),
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.300/24"}"#,
            StatusCode::BAD_REQUEST,
            Starts("invalid request body: "),
        ),
        // Policy: an unknown profile, a malformed egress destination, an unknown rule.
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.0/24","profile":"paranoid"}"#,
            StatusCode::BAD_REQUEST,
            Has("unknown variant `paranoid`, expected `untrusted`"),
        ),
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.0/24","policy":{"egress_deny":["10.0.0.0/33"]}}"#,
            StatusCode::BAD_REQUEST,
            Has("invalid destination \"10.0.0.0/33\": give a CIDR"),
        ),
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.0/24","policy":{"host_access":"53/sctp"}}"#,
            StatusCode::BAD_REQUEST,
            Has("invalid host access \"53/sctp\": the protocol is tcp or udp"),
        ),
        (
            network,
            json,
            br#"{"name":"a","subnet":"10.1.0.0/24","policy":{"host_access":"0"}}"#,
            StatusCode::BAD_REQUEST,
            Has("give all, none, or ports such as 53/udp,53/tcp,22"),
        ),
        (
            rejection::<NetworkUpdate>,
            json,
            br#"{"isolate":true,"egress":["private"]}"#,
            StatusCode::BAD_REQUEST,
            Has("unknown field `egress`"),
        ),
        // No body, or not JSON.
        (network, json, b" \n", StatusCode::BAD_REQUEST, Has("empty")),
        (
            network,
            Some(false),
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Hints("application/json"),
        ),
        (
            network,
            None,
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Starts("missing Content-Type"),
        ),
    ];
    for &(parse, content_type, body, status, ref says) in cases {
        let e = parse(content_type, body);
        let case = format!(
            "{content_type:?} {:?}: {e:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.status, status, "{case}");
        let ok = match says {
            Starts(s) => e.body.error.starts_with(s),
            Has(s) => e.body.error.contains(s),
            Hints(s) => e.body.hint.as_deref().is_some_and(|h| h.contains(s)),
        };
        assert!(ok, "{case}: expected it to say {says:?}");
    }
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
