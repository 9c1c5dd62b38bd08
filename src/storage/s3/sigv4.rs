//! AWS Signature Version 4 for S3 requests (header-based authentication).
//!
//! Pure: takes the request's parts and the time, returns the headers to add.
//! Checked against the examples of AWS's "Signature Calculations for the
//! Authorization Header" page and, in the end-to-end tests, against s3s-fs,
//! which refuses a wrong signature.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The hex SHA-256 of nothing: the payload hash of requests without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What signs requests. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Temporary credentials (STS) come with a session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"********")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "********"),
            )
            .finish()
    }
}

/// A request to sign. `path` is the decoded object path ('/bucket/key' or
/// '/key'); `query` holds decoded pairs; `headers` are the ones the caller
/// sends besides `host` and the `x-amz-*` headers this module adds.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (`EMPTY_SHA256` for none).
    pub payload_sha256: &'a str,
}

/// Headers to send with the request: `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (if any) and `authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let mut added = vec![
        (
            "x-amz-content-sha256".to_string(),
            req.payload_sha256.to_string(),
        ),
        ("x-amz-date".to_string(), amz_date.clone()),
    ];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let mut signed: Vec<(String, String)> = req
        .headers
        .iter()
        .chain(added.iter())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .chain(std::iter::once(("host".to_string(), req.host.to_string())))
        .collect();
    signed.sort();
    let signed_names = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        encode_path(req.path),
        canonical_query(req.query),
        canonical_headers,
        signed_names,
        req.payload_sha256
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    added.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// The query string as sent and as signed: pairs sorted, each part encoded.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The path as sent and as signed: every byte but the unreserved ones and '/'
/// percent-encoded, once (S3 does not double-encode).
pub fn encode_path(path: &str) -> String {
    encode(path, false)
}

/// RFC 3986 encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ stay, everything
/// else is %XX (upper case); '/' stays only in paths.
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Hex SHA-256 of a request body.
pub fn payload_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    // The examples of docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn signature(headers: &[(String, String)]) -> &str {
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        auth.rsplit("Signature=").next().unwrap()
    }

    fn may_24_2013() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap()
    }

    #[test]
    fn get_object_example() {
        let headers = [("Range".to_string(), "bytes=0-9".to_string())];
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let out = sign(&req, &example_creds(), "us-east-1", may_24_2013());
        assert_eq!(
            signature(&out),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let auth = &out.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.contains(
            "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        ));
    }

    #[test]
    fn put_object_example() {
        let body = b"Welcome to Amazon S3.";
        let hash = payload_sha256(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = [
            (
                "Date".to_string(),
                "Fri, 24 May 2013 00:00:00 GMT".to_string(),
            ),
            (
                "x-amz-storage-class".to_string(),
                "REDUCED_REDUNDANCY".to_string(),
            ),
        ];
        let req = Request {
            method: "PUT",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test$file.text",
            query: &[],
            headers: &headers,
            payload_sha256: &hash,
        };
        let out = sign(&req, &example_creds(), "us-east-1", may_24_2013());
        assert_eq!(
            signature(&out),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn list_objects_example() {
        let query = [
            ("max-keys".to_string(), "2".to_string()),
            ("prefix".to_string(), "J".to_string()),
        ];
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &query,
            headers: &[],
            payload_sha256: EMPTY_SHA256,
        };
        let out = sign(&req, &example_creds(), "us-east-1", may_24_2013());
        assert_eq!(
            signature(&out),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode_path("/a b/c~d_e.f-g$"), "/a%20b/c~d_e.f-g%24");
        assert_eq!(
            canonical_query(&[
                ("prefix".into(), "wal/1/".into()),
                ("list-type".into(), "2".into()),
                ("uploads".into(), String::new()),
            ]),
            "list-type=2&prefix=wal%2F1%2F&uploads="
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut c = example_creds();
        c.session_token = Some("token-value".into());
        let s = format!("{c:?}");
        assert!(!s.contains("wJalr") && !s.contains("token-value"), "{s}");
    }
}
