//! AWS Signature Version 4: verifying the `Authorization` header of a request.
//!
//! The canonical request is rebuilt from what arrived (method, the path as sent, the query,
//! the signed headers, the body's SHA-256), hashed into the string to sign with the
//! credential scope, and signed with the key derived from the secret of the access key the
//! request names; the signatures must match, compared in constant time. A request dated
//! more than 15 minutes from the hub's clock is refused, as AWS refuses it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's date may be from the hub's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("the request is not signed (no Authorization header)")]
    Missing,
    /// The header is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`,
    /// or a part it needs is missing.
    #[error("the Authorization header is malformed: {0}")]
    Malformed(String),
    /// The access key is not one the hub knows.
    #[error("the security token included in the request is invalid")]
    UnknownKey,
    /// The request's date is too far from now.
    #[error("signature expired: the request is dated {0}, more than 15 minutes from now")]
    Expired(String),
    /// The credential scope names another service than the one answering.
    #[error("the request is signed for service {0:?}, not this one")]
    WrongService(String),
    /// The signature does not match.
    #[error(
        "the request signature we calculated does not match the signature you provided; \
         check your AWS secret access key and signing method"
    )]
    Mismatch,
}

impl AuthError {
    /// The AWS error type, for the `x-amzn-ErrorType` header.
    pub fn aws_type(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Expired(_) => "InvalidSignatureException",
            AuthError::WrongService(_) => "InvalidSignatureException",
            AuthError::Mismatch => "InvalidSignatureException",
        }
    }
}

/// What a verifier needs of the request.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Header names (any case) and values.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub(crate) access_key: String,
    pub(crate) date: String,
    pub(crate) region: String,
    pub(crate) service: String,
    pub(crate) signed_headers: Vec<String>,
    pub(crate) signature: String,
}

pub(crate) fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_owned());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256")
        .ok_or_else(|| malformed("the algorithm is not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let mut scope = credential.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(malformed(
            "the Credential is not KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signed_headers: Vec<String> = signed
        .ok_or_else(|| malformed("no SignedHeaders"))?
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(malformed("the host header is not signed"));
    }
    let signature = signature.ok_or_else(|| malformed("no Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the Signature is not 64 hex digits"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the credential's date is not YYYYMMDD"));
    }
    Ok(Authorization {
        access_key: access_key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Verifies `request`'s signature. `secret_of` gives the secret key of an access key the
/// hub knows; the result is that access key.
pub fn verify<'k>(
    request: &SignedRequest<'_>,
    now: SystemTime,
    secret_of: impl Fn(&str) -> Option<&'k str>,
) -> Result<String, AuthError> {
    let pending = check_headers(request, now, secret_of)?;
    pending.finish(request, &hex(&Sha256::digest(request.body)))
}

/// A request whose headers passed: signed, with a well-formed `Authorization` naming a
/// known key, dated within [`MAX_SKEW`]. What is left depends on the body.
#[derive(Debug, Clone)]
pub struct HeadersChecked {
    auth: Authorization,
    amz_date: String,
    secret: String,
    /// `X-Amz-Content-Sha256`, when the client declared the body's hash (and did not say
    /// `UNSIGNED-PAYLOAD`).
    declared: Option<String>,
}

/// Checks everything that does not need the body, so a request that cannot pass is
/// refused before its body is read (the `body` of `request` is not looked at).
pub fn check_headers<'k>(
    request: &SignedRequest<'_>,
    now: SystemTime,
    secret_of: impl Fn(&str) -> Option<&'k str>,
) -> Result<HeadersChecked, AuthError> {
    let header = request.header("authorization").ok_or(AuthError::Missing)?;
    let auth = parse_authorization(header)?;
    let secret = secret_of(&auth.access_key).ok_or(AuthError::UnknownKey)?;
    let amz_date = request
        .header("x-amz-date")
        .ok_or_else(|| AuthError::Malformed("no X-Amz-Date header".into()))?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(&auth.date) {
        return Err(AuthError::Malformed(
            "the credential's date is not the day of X-Amz-Date".into(),
        ));
    }
    let skew = now
        .duration_since(when)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(AuthError::Expired(amz_date.to_owned()));
    }
    let declared = request
        .header("x-amz-content-sha256")
        .filter(|h| *h != "UNSIGNED-PAYLOAD")
        .map(str::to_owned);
    Ok(HeadersChecked {
        auth,
        amz_date: amz_date.to_owned(),
        secret: secret.to_owned(),
        declared,
    })
}

impl HeadersChecked {
    /// Refuses a request whose credential scope names another service than `service`
    /// (a signature made for `s3` is not one for `lambda`).
    pub fn expect_service(&self, service: &str) -> Result<(), AuthError> {
        if self.auth.service == service {
            Ok(())
        } else {
            Err(AuthError::WrongService(self.auth.service.clone()))
        }
    }

    /// The access key the request names.
    pub fn access_key(&self) -> &str {
        &self.auth.access_key
    }

    /// Whether the signature can be checked before the body is read: the client declared
    /// the body's hash in `X-Amz-Content-Sha256`.
    pub fn hash_declared(&self) -> bool {
        self.declared.is_some()
    }

    /// Checks the signature over the declared body hash, before the body is read. The
    /// body must then be held to that hash with [`finish`](Self::finish).
    pub fn verify_declared(&self, request: &SignedRequest<'_>) -> Result<(), AuthError> {
        let declared = self.declared.as_deref().ok_or(AuthError::Mismatch)?;
        self.verify_with(request, declared)
    }

    fn verify_with(&self, request: &SignedRequest<'_>, hash: &str) -> Result<(), AuthError> {
        let expected = signature(request, &self.auth, &self.amz_date, &self.secret, hash)?;
        if constant_time_eq(expected.as_bytes(), self.auth.signature.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// Finishes with the body's SHA-256 (lower-case hex), computed as it streamed in: it
    /// must be the declared one, or, when none was declared, the signature must hold over
    /// it. The result is the request's access key.
    pub fn finish(
        self,
        request: &SignedRequest<'_>,
        body_sha256: &str,
    ) -> Result<String, AuthError> {
        match &self.declared {
            Some(declared) => {
                self.verify_with(request, declared)?;
                let declared = declared.to_ascii_lowercase();
                if !constant_time_eq(declared.as_bytes(), body_sha256.as_bytes()) {
                    return Err(AuthError::Mismatch);
                }
            }
            None => self.verify_with(request, body_sha256)?,
        }
        Ok(self.auth.access_key)
    }
}

/// The SHA-256 of a body, fed as it streams in, for [`HeadersChecked::finish`].
#[derive(Debug, Clone, Default)]
pub struct BodyHash(Sha256);

impl BodyHash {
    /// An empty hash.
    pub fn new() -> BodyHash {
        BodyHash::default()
    }

    /// Feeds the next part of the body.
    pub fn update(&mut self, part: &[u8]) {
        self.0.update(part);
    }

    /// The hash, in lower-case hex.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The signature a request with these parts should carry.
pub(crate) fn signature(
    request: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    secret: &str,
    payload_hash: &str,
) -> Result<String, AuthError> {
    let mut canonical = String::new();
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical.push_str(&canonical_path(request.path));
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query));
    canonical.push('\n');
    for name in &auth.signed_headers {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            return Err(AuthError::Malformed(format!(
                "the signed header {name:?} is not in the request"
            )));
        }
        let joined: Vec<String> = values.iter().map(|v| squash(v)).collect();
        let _ = writeln!(canonical, "{name}:{}", joined.join(","));
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(payload_hash);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [
        auth.region.as_bytes(),
        auth.service.as_bytes(),
        b"aws4_request",
    ] {
        key = hmac(&key, part);
    }
    Ok(hex(&hmac(&key, to_sign.as_bytes())))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Trims a header value and folds inner runs of spaces into one.
fn squash(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every byte but the unreserved ones percent-encoded, as SigV4 asks.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(h)) if h.iter().all(u8::is_ascii_hexdigit) => {
                let hexs = std::str::from_utf8(h).unwrap_or("00");
                out.push(u8::from_str_radix(hexs, 16).unwrap_or(0));
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Services other than S3 sign the path encoded once more, segment by segment.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    encode(path, true)
}

/// `key=value` pairs, each encoded, sorted by key then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), false), encode(&decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn auth(sig: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={sig}"
        )
    }

    fn request<'a>(query: &'a str, headers: &'a [(&'a str, &'a str)]) -> SignedRequest<'a> {
        SignedRequest {
            method: "GET",
            path: "/",
            query,
            headers,
            body: b"",
        }
    }

    fn now() -> SystemTime {
        parse_amz_date(DATE).unwrap() + Duration::from_secs(60)
    }

    // The get-vanilla and get-vanilla-query-order-key-case cases of AWS's SigV4 test suite.
    #[test]
    fn the_aws_test_suite_signatures_verify() {
        for (query, sig) in [
            (
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        ] {
            let a = auth(sig);
            let headers = [
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", DATE),
                ("Authorization", a.as_str()),
            ];
            let key = verify(&request(query, &headers), now(), |k| {
                (k == "AKIDEXAMPLE").then_some(SECRET)
            });
            assert_eq!(key.as_deref(), Ok("AKIDEXAMPLE"), "{query}");
        }
    }

    #[test]
    fn wrong_secrets_keys_dates_and_tampering_are_refused() {
        let good = auth("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
            ("Authorization", good.as_str()),
        ];
        let r = request("", &headers);
        assert_eq!(
            verify(&r, now(), |_| Some("another secret")),
            Err(AuthError::Mismatch)
        );
        assert_eq!(verify(&r, now(), |_| None), Err(AuthError::UnknownKey));
        let late = now() + Duration::from_secs(16 * 60);
        assert!(matches!(
            verify(&r, late, |_| Some(SECRET)),
            Err(AuthError::Expired(_))
        ));
        // A query the signer did not sign.
        assert_eq!(
            verify(&request("x=1", &headers), now(), |_| Some(SECRET)),
            Err(AuthError::Mismatch)
        );
        let unsigned = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        assert_eq!(
            verify(&request("", &unsigned), now(), |_| Some(SECRET)),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for bad in [
            "Basic abc",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/service, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=xyz",
            "AWS4-HMAC-SHA256 Credential=K/2015083/us-east-1/service/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert!(
                matches!(parse_authorization(bad), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
        for bad in [
            "",
            "20150830T1236Z",
            "20151330T123600Z",
            "2015083xT123600Z",
            "20150830 123600Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dates_count_days_like_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let t = parse_amz_date("20261129T210000Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_986_000
        );
    }

    proptest::proptest! {
        #[test]
        fn any_authorization_header_parses_or_is_refused(value in "\\PC{0,200}") {
            let _ = parse_authorization(&value);
        }

        #[test]
        fn a_damaged_authorization_header_parses_or_is_refused(
            start in 0usize..200,
            len in 0usize..20,
            insert in "[A-Za-z0-9=,/ ;]{0,8}",
        ) {
            let valid = auth("abcd");
            let start = start.min(valid.len());
            let end = (start + len).min(valid.len());
            let _ = parse_authorization(&format!("{}{insert}{}", &valid[..start], &valid[end..]));
        }
    }

    #[test]
    fn a_declared_body_hash_is_checked_first_and_held_to_the_body() {
        let body = br#"{"a":1}"#;
        let declared = hex(&Sha256::digest(body));
        let base = [
            ("host", "example.amazonaws.com"),
            ("x-amz-content-sha256", declared.as_str()),
            ("x-amz-date", DATE),
        ];
        let unsigned = Authorization {
            access_key: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
            signed_headers: vec![
                "host".into(),
                "x-amz-content-sha256".into(),
                "x-amz-date".into(),
            ],
            signature: String::new(),
        };
        let plain = |headers| SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body: b"",
        };
        let sig = signature(&plain(&base), &unsigned, DATE, SECRET, &declared).unwrap();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"
        );
        let mut headers = base.to_vec();
        headers.push(("authorization", authorization.as_str()));
        let req = plain(&headers);
        let secret_of = |k: &str| (k == "AKIDEXAMPLE").then_some(SECRET);
        let checked = check_headers(&req, now(), secret_of).unwrap();
        assert!(checked.hash_declared());
        checked.verify_declared(&req).unwrap();
        // A body other than the one declared and signed is refused.
        let mut other = BodyHash::new();
        other.update(br#"{"a":2}"#);
        assert_eq!(
            checked.clone().finish(&req, &other.finish()),
            Err(AuthError::Mismatch)
        );
        let mut streamed = BodyHash::new();
        streamed.update(&body[..3]);
        streamed.update(&body[3..]);
        assert_eq!(
            checked.finish(&req, &streamed.finish()).unwrap(),
            "AKIDEXAMPLE"
        );
        // An unknown key is refused on the headers alone.
        assert_eq!(
            check_headers(&req, now(), |_| None).unwrap_err(),
            AuthError::UnknownKey
        );
    }
}
