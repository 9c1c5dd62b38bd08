//! S3 and S3-compatible object stores, over plain HTTP(S) with our own SigV4.
//!
//! Every request is retried with backoff on what a flaky network or a busy
//! service does (timeouts, broken connections, 5xx, throttling); an object
//! larger than one part goes up as a multipart upload whose parts are sent in
//! parallel and retried one by one. `put(Create)` sends `If-None-Match: *`, so
//! the service refuses to replace an object (AWS S3, moto and s3s honour it).
//!
//! Storage classes: backup data (packs) and archived WAL may be written in an
//! archive class; what lifeboat must read to list, back up and prune is always
//! written in the bucket's default class.

mod credentials;
pub mod sigv4;
mod xml;

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::{
    ArchiveState, ErrorKind, ObjectMeta, PutMode, Result, Storage, StorageError, Tier,
    validate_path, validate_prefix,
};
pub use credentials::Sources;
pub use sigv4::Credentials;

/// Storage classes that need a retrieval (RestoreObject) before a GET.
pub const ARCHIVE_CLASSES: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];
/// Storage classes S3 documents; anything else is refused by the configuration.
pub const KNOWN_CLASSES: [&str; 9] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

/// Settings of an `s3://` repository beyond its URL (from lifeboat.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `None`: the configured region, the AWS environment or profile, us-east-1.
    pub region: Option<String>,
    /// `https://host[:port]` or `http://...`; `None` is AWS
    /// (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// Path-style addressing (`host/bucket/key`); `None`: on for a custom
    /// endpoint, off for AWS (virtual-hosted `bucket.host/key`).
    pub path_style: Option<bool>,
    /// Class of backup data (packs).
    pub storage_class: Option<String>,
    /// Class of archived WAL; `None`: the bucket's default.
    pub wal_storage_class: Option<String>,
    /// AWS profile for credentials and region.
    pub profile: Option<String>,
    /// A shared-credentials file for this repository only (instead of
    /// `AWS_SHARED_CREDENTIALS_FILE` / `~/.aws/credentials`).
    pub credentials_file: Option<std::path::PathBuf>,
    /// Connect and per-read/write timeout (default 60 s).
    pub timeout: Option<Duration>,
    /// Attempts per request, the first included (default 8).
    pub attempts: Option<u32>,
    /// Multipart part size (default 8 MiB; S3's minimum is 5 MiB).
    pub part_size: Option<usize>,
    /// Requests in flight for one multipart upload and for writers that ask
    /// (default 4).
    pub concurrency: Option<usize>,
    /// Restores from archived packs: how long retrieved copies stay readable
    /// (default 7 days), the retrieval tier (Standard, Bulk, Expedited), and
    /// how often to look whether they are ready (default 1 minute).
    pub retrieval_days: Option<u32>,
    pub retrieval_tier: Option<String>,
    pub retrieval_poll: Option<Duration>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_ATTEMPTS: u32 = 8;
const DEFAULT_PART_SIZE: usize = 8 << 20;
const MIN_PART_SIZE: usize = 5 << 20;
const DEFAULT_CONCURRENCY: usize = 4;
/// First backoff; doubles per attempt up to `MAX_BACKOFF`, with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// GETs of whole objects: far above any object lifeboat writes (packs and
/// WAL objects are tens of MiB), a guard against a wrong endpoint streaming
/// without end.
const MAX_BODY: u64 = 1 << 30;

pub struct S3Storage {
    bucket: String,
    /// Key prefix of the repository: empty, or ending in '/'.
    root: String,
    region: String,
    scheme: String,
    /// host[:port] of the endpoint (without the bucket).
    host: String,
    path_style: bool,
    data_class: Option<String>,
    wal_class: Option<String>,
    creds: Credentials,
    agent: ureq::Agent,
    attempts: u32,
    part_size: usize,
    concurrency: usize,
    /// Requests retried so far (for tests and messages).
    retried: AtomicUsize,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("url", &self.url())
            .field("endpoint", &format!("{}://{}", self.scheme, self.host))
            .finish()
    }
}

/// A response, read whole.
struct Response {
    status: u16,
    /// Attempts it took (a retried write may have gone through before).
    attempts: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// S3's error code from an XML error body ("NoSuchKey", ...), if any.
    fn code(&self) -> Option<String> {
        xml::first(&String::from_utf8_lossy(&self.body), "Code")
    }

    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match (xml::first(&text, "Code"), xml::first(&text, "Message")) {
            (Some(code), Some(msg)) => format!("HTTP {} {code}: {msg}", self.status),
            (Some(code), None) => format!("HTTP {} {code}", self.status),
            _ => format!("HTTP {}", self.status),
        }
    }
}

/// One request, described so it can be signed and sent again on retry.
struct Call<'a> {
    op: &'static str,
    /// The object path (relative to the repository) for messages.
    path: &'a str,
    method: &'static str,
    /// Full key in the bucket; `None` for bucket-level requests.
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl S3Storage {
    /// `url` is `s3://bucket[/prefix]`.
    pub fn new(url: &str, settings: &S3Settings) -> anyhow::Result<S3Storage> {
        parse_url(url)?;
        let env = |k: &str| std::env::var(k).ok();
        let sources = Sources {
            profile: settings.profile.as_deref(),
            credentials_file: settings.credentials_file.as_deref(),
            env: &env,
        };
        let creds = sources.credentials().map_err(anyhow::Error::msg)?;
        let region = settings.region.clone().unwrap_or_else(|| sources.region());
        S3Storage::with_credentials(url, settings, creds, region)
    }

    pub fn with_credentials(
        url: &str,
        settings: &S3Settings,
        creds: Credentials,
        region: String,
    ) -> anyhow::Result<S3Storage> {
        let (bucket, root) = parse_url(url)?;
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let (scheme, host) = endpoint
            .trim_end_matches('/')
            .split_once("://")
            .filter(|(s, h)| (*s == "http" || *s == "https") && !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "endpoint {endpoint:?} is not an http(s)://host[:port] address; hint: endpoint = \"https://s3.eu-west-1.amazonaws.com\""
                )
            })?;
        let path_style = settings
            .path_style
            .unwrap_or(settings.endpoint.is_some() || bucket.contains('.'));
        let timeout = settings.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let part_size = settings.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if part_size < MIN_PART_SIZE {
            anyhow::bail!("part_size must be at least 5 MiB (S3's minimum part size)");
        }
        Ok(S3Storage {
            bucket,
            root,
            region,
            scheme: scheme.to_string(),
            host: host.to_string(),
            path_style,
            data_class: settings.storage_class.clone(),
            wal_class: settings.wal_storage_class.clone(),
            creds,
            agent,
            attempts: settings.attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1),
            part_size,
            concurrency: settings.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
            retried: AtomicUsize::new(0),
        })
    }

    /// How many requests were retried since this storage was opened.
    pub fn retries(&self) -> usize {
        self.retried.load(Ordering::Relaxed)
    }

    /// Create the bucket (tests and `lifeboat init` against a fresh service).
    /// An existing bucket of ours is fine.
    pub fn create_bucket(&self) -> Result<()> {
        let resp = self.send(&Call {
            op: "create bucket",
            path: "",
            method: "PUT",
            key: None,
            query: vec![],
            headers: vec![],
            body: &[],
        })?;
        match resp.status {
            200 => Ok(()),
            409 if resp.code().as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            _ => Err(self.error("create bucket", "", &resp)),
        }
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    fn host_and_path(&self, key: Option<&str>) -> (String, String) {
        let key = key.unwrap_or("");
        if self.path_style {
            let path = if key.is_empty() {
                format!("/{}", self.bucket)
            } else {
                format!("/{}/{key}", self.bucket)
            };
            (self.host.clone(), path)
        } else {
            (format!("{}.{}", self.bucket, self.host), format!("/{key}"))
        }
    }

    /// Sign and send `call`, retrying what can be retried. Returns the last
    /// response, whatever its status; transport failures that outlast the
    /// retries are errors.
    fn send(&self, call: &Call<'_>) -> Result<Response> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                self.retried.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(backoff(attempt));
            }
            match self.send_once(call) {
                Ok(resp) if retryable(&resp) => last = resp.describe(),
                Ok(mut resp) => {
                    resp.attempts = attempt + 1;
                    return Ok(resp);
                }
                Err(e) => last = e,
            }
        }
        Err(StorageError::new(
            ErrorKind::Other,
            call.op,
            call.path,
            format!(
                "{} {}: {last} (gave up after {} attempts); hint: check the endpoint and the network",
                self.url(),
                call.method,
                self.attempts
            ),
        ))
    }

    fn send_once(&self, call: &Call<'_>) -> std::result::Result<Response, String> {
        let (host, path) = self.host_and_path(call.key);
        let payload = if call.body.is_empty() {
            sigv4::EMPTY_SHA256.to_string()
        } else {
            sigv4::payload_sha256(call.body)
        };
        let signed = sigv4::sign(
            &sigv4::Request {
                method: call.method,
                host: &host,
                path: &path,
                query: &call.query,
                headers: &call.headers,
                payload_sha256: &payload,
            },
            &self.creds,
            &self.region,
            Utc::now(),
        );
        let query = sigv4::canonical_query(&call.query);
        let url = if query.is_empty() {
            format!("{}://{host}{}", self.scheme, sigv4::encode_path(&path))
        } else {
            format!(
                "{}://{host}{}?{query}",
                self.scheme,
                sigv4::encode_path(&path)
            )
        };
        let mut req = ureq::http::Request::builder()
            .method(call.method)
            .uri(&url)
            .header("host", &host);
        for (k, v) in call.headers.iter().chain(signed.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        let result = match call.method {
            "GET" | "HEAD" | "DELETE" => {
                let req = req.body(()).map_err(|e| e.to_string())?;
                self.agent.run(req)
            }
            _ => {
                let req = req.body(call.body).map_err(|e| e.to_string())?;
                self.agent.run(req)
            }
        };
        let mut resp = result.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = if call.method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .map_err(|e| format!("reading the response: {e}"))?
        };
        Ok(Response {
            status,
            attempts: 1,
            headers,
            body,
        })
    }

    /// The error for an unexpected response.
    fn error(&self, op: &'static str, path: &str, resp: &Response) -> StorageError {
        let code = resp.code();
        let kind = match (resp.status, code.as_deref()) {
            (404, Some("NoSuchBucket")) => ErrorKind::Other,
            (404, _) => ErrorKind::NotFound,
            (412, _) => ErrorKind::AlreadyExists,
            (403, Some("InvalidObjectState")) => ErrorKind::Archived,
            (403, _) => ErrorKind::PermissionDenied,
            (507, _) => ErrorKind::NoSpace,
            _ => ErrorKind::Other,
        };
        let hint = match (kind, code.as_deref()) {
            (_, Some("NoSuchBucket")) => {
                "; hint: create the bucket first (lifeboat does not create buckets on AWS)"
            }
            (ErrorKind::Archived, _) => {
                "; hint: the object is in an archive storage class; `lifeboat restore` starts its retrieval"
            }
            (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId")) => {
                "; hint: check the credentials (AWS_ACCESS_KEY_ID / the profile) and the region"
            }
            (ErrorKind::PermissionDenied, _) => {
                "; hint: the credentials lack a permission on this bucket or prefix"
            }
            _ => "",
        };
        StorageError::new(kind, op, path, format!("{}{hint}", resp.describe()))
    }

    fn class_of(&self, tier: Tier) -> Option<&str> {
        match tier {
            Tier::Hot => None,
            Tier::Data => self.data_class.as_deref(),
            Tier::Wal => self.wal_class.as_deref(),
        }
    }

    fn put_single(
        &self,
        path: &str,
        data: &[u8],
        mode: PutMode,
        class: Option<&str>,
    ) -> Result<()> {
        let key = self.key(path);
        let mut headers = vec![("content-type".into(), "application/octet-stream".into())];
        if mode == PutMode::Create {
            headers.push(("if-none-match".into(), "*".into()));
        }
        if let Some(c) = class {
            headers.push(("x-amz-storage-class".into(), c.to_string()));
        }
        let call = Call {
            op: "write",
            path,
            method: "PUT",
            key: Some(&key),
            query: vec![],
            headers,
            body: data,
        };
        self.finish_put(path, data, self.send_retrying_conflicts(&call)?)
    }

    /// A conditional write racing another is answered 409
    /// ConditionalRequestConflict: try again (the next answer is 200 or 412).
    fn send_retrying_conflicts(&self, call: &Call<'_>) -> Result<Response> {
        let mut resp = self.send(call)?;
        for attempt in 1..self.attempts {
            if resp.status != 409 || resp.code().as_deref() != Some("ConditionalRequestConflict") {
                break;
            }
            std::thread::sleep(backoff(attempt));
            resp = self.send(call)?;
        }
        Ok(resp)
    }

    /// Interpret the answer to a PUT or a multipart completion.
    fn finish_put(&self, path: &str, data: &[u8], resp: Response) -> Result<()> {
        match resp.status {
            200 => Ok(()),
            // A retried create whose first attempt went through (the answer was
            // lost) finds its own object: that is success, not a conflict.
            412 if resp.attempts > 1 && self.get(path).is_ok_and(|d| d == data) => Ok(()),
            _ => Err(self.error("write", path, &resp)),
        }
    }

    fn put_multipart(
        &self,
        path: &str,
        data: &[u8],
        mode: PutMode,
        class: Option<&str>,
    ) -> Result<()> {
        let key = self.key(path);
        if mode == PutMode::Create {
            // Do not upload megabytes that the completion will refuse.
            match self.head(path) {
                Ok(_) => {
                    return Err(StorageError::new(
                        ErrorKind::AlreadyExists,
                        "write",
                        path,
                        "object exists",
                    ));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let mut headers = vec![("content-type".into(), "application/octet-stream".into())];
        if let Some(c) = class {
            headers.push(("x-amz-storage-class".into(), c.to_string()));
        }
        let resp = self.send(&Call {
            op: "write",
            path,
            method: "POST",
            key: Some(&key),
            query: vec![("uploads".into(), String::new())],
            headers,
            body: &[],
        })?;
        if resp.status != 200 {
            return Err(self.error("write", path, &resp));
        }
        let upload_id =
            xml::first(&String::from_utf8_lossy(&resp.body), "UploadId").ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Other,
                    "write",
                    path,
                    "CreateMultipartUpload returned no UploadId",
                )
            })?;
        let result = self
            .upload_parts(path, &key, &upload_id, data)
            .and_then(|etags| self.complete_multipart(path, &key, &upload_id, data, mode, &etags));
        if result.is_err() {
            // Best effort: prune's cleanup aborts what is left if this fails too.
            let _ = self.abort_multipart(path, &key, &upload_id);
        }
        result
    }

    /// Upload the parts on up to `concurrency` threads; each part is retried on
    /// its own. Returns the parts' ETags in order.
    fn upload_parts(
        &self,
        path: &str,
        key: &str,
        upload_id: &str,
        data: &[u8],
    ) -> Result<Vec<String>> {
        let parts: Vec<&[u8]> = data.chunks(self.part_size).collect();
        let next = AtomicUsize::new(0);
        let etags = Mutex::new(vec![String::new(); parts.len()]);
        let failure: Mutex<Option<StorageError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..self.concurrency.min(parts.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= parts.len() || failure.lock().unwrap().is_some() {
                            return;
                        }
                        let call = Call {
                            op: "write",
                            path,
                            method: "PUT",
                            key: Some(key),
                            query: vec![
                                ("partNumber".into(), (i + 1).to_string()),
                                ("uploadId".into(), upload_id.to_string()),
                            ],
                            headers: vec![],
                            body: parts[i],
                        };
                        let outcome = self.send(&call).and_then(|resp| {
                            match (resp.status, resp.header("etag")) {
                                (200, Some(etag)) => Ok(etag.to_string()),
                                (200, None) => Err(StorageError::new(
                                    ErrorKind::Other,
                                    "write",
                                    path,
                                    format!("part {} was stored without an ETag", i + 1),
                                )),
                                _ => Err(self.error("write", path, &resp)),
                            }
                        });
                        match outcome {
                            Ok(etag) => etags.lock().unwrap()[i] = etag,
                            Err(e) => {
                                failure.lock().unwrap().get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        match failure.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(etags.into_inner().unwrap()),
        }
    }

    fn complete_multipart(
        &self,
        path: &str,
        key: &str,
        upload_id: &str,
        data: &[u8],
        mode: PutMode,
        etags: &[String],
    ) -> Result<()> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml::escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut headers = vec![("content-type".into(), "application/xml".into())];
        if mode == PutMode::Create {
            headers.push(("if-none-match".into(), "*".into()));
        }
        let call = Call {
            op: "write",
            path,
            method: "POST",
            key: Some(key),
            query: vec![("uploadId".into(), upload_id.to_string())],
            headers,
            body: body.as_bytes(),
        };
        let resp = self.send_retrying_conflicts(&call)?;
        // S3 may answer 200 with an error document in the body when the
        // completion fails after it started sending.
        if resp.status == 200 && xml::first(&String::from_utf8_lossy(&resp.body), "Code").is_some()
        {
            return Err(self.error("write", path, &resp));
        }
        // The upload is gone once completed: a retry of the completion after a
        // lost answer gets NoSuchUpload; our object is there if it is whole.
        if resp.status == 404
            && resp.code().as_deref() == Some("NoSuchUpload")
            && self.get(path).is_ok_and(|d| d == data)
        {
            return Ok(());
        }
        self.finish_put(path, data, resp)
    }

    fn abort_multipart(&self, path: &str, key: &str, upload_id: &str) -> Result<()> {
        let resp = self.send(&Call {
            op: "cleanup",
            path,
            method: "DELETE",
            key: Some(key),
            query: vec![("uploadId".into(), upload_id.to_string())],
            headers: vec![],
            body: &[],
        })?;
        match resp.status {
            // Gone already (s3s answers an unknown upload with 403).
            200 | 204 | 404 | 403 => Ok(()),
            _ => Err(self.error("cleanup", path, &resp)),
        }
    }

    fn head_response(&self, path: &str) -> Result<Response> {
        validate_path("read", path)?;
        let key = self.key(path);
        let resp = self.send(&Call {
            op: "read",
            path,
            method: "HEAD",
            key: Some(&key),
            query: vec![],
            headers: vec![],
            body: &[],
        })?;
        match resp.status {
            200 => Ok(resp),
            _ => Err(self.error("read", path, &resp)),
        }
    }
}

impl Storage for S3Storage {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.root.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }

    fn put(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.put_tier(path, data, mode, Tier::Hot)
    }

    fn put_tier(&self, path: &str, data: &[u8], mode: PutMode, tier: Tier) -> Result<()> {
        validate_path("write", path)?;
        let class = self.class_of(tier);
        if data.len() > self.part_size {
            self.put_multipart(path, data, mode, class)
        } else {
            self.put_single(path, data, mode, class)
        }
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        validate_path("read", path)?;
        let key = self.key(path);
        let resp = self.send(&Call {
            op: "read",
            path,
            method: "GET",
            key: Some(&key),
            query: vec![],
            headers: vec![],
            body: &[],
        })?;
        match resp.status {
            200 => Ok(resp.body),
            _ => Err(self.error("read", path, &resp)),
        }
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        validate_path("read", path)?;
        let past_end = |size: u64| {
            StorageError::new(
                ErrorKind::Other,
                "read",
                path,
                format!(
                    "short read: range {}..{} is past the end of the object ({size} bytes)",
                    range.start, range.end
                ),
            )
        };
        if range.start >= range.end {
            // No byte to ask for: S3 cannot express an empty range.
            let size = self.head(path)?.size;
            return if range.start <= size && range.start == range.end {
                Ok(Vec::new())
            } else {
                Err(past_end(size))
            };
        }
        let key = self.key(path);
        let resp = self.send(&Call {
            op: "read",
            path,
            method: "GET",
            key: Some(&key),
            query: vec![],
            headers: vec![(
                "range".into(),
                format!("bytes={}-{}", range.start, range.end - 1),
            )],
            body: &[],
        })?;
        match resp.status {
            206 | 200 => {
                let want = (range.end - range.start) as usize;
                let body = if resp.status == 200 {
                    // A server that ignores Range sends the whole object.
                    let size = resp.body.len() as u64;
                    if range.end > size {
                        return Err(past_end(size));
                    }
                    resp.body[range.start as usize..range.end as usize].to_vec()
                } else {
                    resp.body
                };
                if body.len() != want {
                    // S3 clamps a range that ends past the object.
                    let size = range.start + body.len() as u64;
                    return Err(past_end(size));
                }
                Ok(body)
            }
            416 => Err(past_end(
                xml::first(&String::from_utf8_lossy(&resp.body), "ActualObjectSize")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(self.error("read", path, &resp)),
        }
    }

    fn head(&self, path: &str) -> Result<ObjectMeta> {
        let resp = self.head_response(path)?;
        let size = resp
            .header("content-length")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Other,
                    "read",
                    path,
                    "HEAD without Content-Length",
                )
            })?;
        Ok(ObjectMeta {
            path: path.to_string(),
            size,
            modified: resp
                .header("last-modified")
                .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
                .map(SystemTime::from),
            class: Some(
                resp.header("x-amz-storage-class")
                    .unwrap_or("STANDARD")
                    .to_string(),
            ),
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix("list", prefix)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), self.key(prefix)),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let resp = self.send(&Call {
                op: "list",
                path: prefix,
                method: "GET",
                key: None,
                query,
                headers: vec![],
                body: &[],
            })?;
            if resp.status != 200 {
                return Err(self.error("list", prefix, &resp));
            }
            let doc = String::from_utf8_lossy(&resp.body);
            for entry in xml::all(&doc, "Contents") {
                let key = xml::first(entry, "Key").unwrap_or_default();
                let Some(path) = key.strip_prefix(&self.root) else {
                    continue;
                };
                out.push(ObjectMeta {
                    path: path.to_string(),
                    size: xml::first(entry, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    modified: xml::first(entry, "LastModified")
                        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                        .map(SystemTime::from),
                    class: xml::first(entry, "StorageClass"),
                });
            }
            token = xml::first(&doc, "NextContinuationToken");
            if xml::first(&doc, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return Ok(out);
            }
        }
    }

    fn delete(&self, path: &str) -> Result<()> {
        validate_path("delete", path)?;
        let key = self.key(path);
        let resp = self.send(&Call {
            op: "delete",
            path,
            method: "DELETE",
            key: Some(&key),
            query: vec![],
            headers: vec![],
            body: &[],
        })?;
        match resp.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.error("delete", path, &resp)),
        }
    }

    /// Abort multipart uploads under the repository's prefix that were started
    /// at least `older_than` ago (a crashed writer's parts cost storage until
    /// then). A service that cannot list uploads has nothing to clean here.
    fn cleanup(&self, older_than: Duration) -> Result<usize> {
        let resp = self.send(&Call {
            op: "cleanup",
            path: "",
            method: "GET",
            key: None,
            query: vec![
                ("uploads".into(), String::new()),
                ("prefix".into(), self.root.clone()),
            ],
            headers: vec![],
            body: &[],
        })?;
        if resp.status == 501 {
            return Ok(0);
        }
        if resp.status != 200 {
            return Err(self.error("cleanup", "", &resp));
        }
        let doc = String::from_utf8_lossy(&resp.body);
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut aborted = 0;
        for upload in xml::all(&doc, "Upload") {
            let (Some(key), Some(id)) = (xml::first(upload, "Key"), xml::first(upload, "UploadId"))
            else {
                continue;
            };
            let started = xml::first(upload, "Initiated")
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(SystemTime::from);
            if started.is_some_and(|t| t <= cutoff) {
                let path = key.strip_prefix(&self.root).unwrap_or(&key).to_string();
                self.abort_multipart(&path, &key, &id)?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    fn archive_state(&self, path: &str) -> Result<ArchiveState> {
        let resp = self.head_response(path)?;
        let class = resp.header("x-amz-storage-class").unwrap_or("STANDARD");
        if !ARCHIVE_CLASSES.contains(&class) {
            return Ok(ArchiveState::Readable);
        }
        Ok(match resp.header("x-amz-restore") {
            Some(r) if r.contains("ongoing-request=\"true\"") => ArchiveState::Retrieving,
            Some(r) if r.contains("ongoing-request=\"false\"") => ArchiveState::Readable,
            _ => ArchiveState::Archived {
                class: class.to_string(),
            },
        })
    }

    fn request_retrieval(&self, path: &str, days: u32, tier: &str) -> Result<()> {
        validate_path("retrieve", path)?;
        let key = self.key(path);
        let body = format!(
            "<RestoreRequest><Days>{days}</Days><GlacierJobParameters><Tier>{}</Tier></GlacierJobParameters></RestoreRequest>",
            xml::escape(tier)
        );
        let resp = self.send(&Call {
            op: "retrieve",
            path,
            method: "POST",
            key: Some(&key),
            query: vec![("restore".into(), String::new())],
            headers: vec![("content-type".into(), "application/xml".into())],
            body: body.as_bytes(),
        })?;
        match (resp.status, resp.code().as_deref()) {
            (200 | 202, _) => Ok(()),
            // Asked before and still running.
            (409, Some("RestoreAlreadyInProgress")) => Ok(()),
            _ => Err(self.error("retrieve", path, &resp)),
        }
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }
}

/// The bucket and the key prefix (empty, or ending in '/') of `s3://bucket/prefix`.
fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow::anyhow!("not an s3:// url: {url:?}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        anyhow::bail!(
            "repository url {url:?}: {bucket:?} is not a valid bucket name; hint: s3://bucket/prefix, bucket in lower case"
        );
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok((bucket.to_string(), String::new()));
    }
    validate_path("open", prefix).map_err(|e| {
        anyhow::anyhow!(
            "repository url {url:?}: the prefix is not valid: {}",
            e.message
        )
    })?;
    Ok((bucket.to_string(), format!("{prefix}/")))
}

/// Worth another try: throttling, server errors, request timeouts.
fn retryable(resp: &Response) -> bool {
    match resp.status {
        429 | 500 | 502 | 503 | 504 => true,
        400 => matches!(
            resp.code().as_deref(),
            Some("RequestTimeout" | "SlowDown" | "RequestTimeTooSkewed")
        ),
        _ => false,
    }
}

/// Exponential backoff with full jitter: up to 100 ms, 200 ms, ... 10 s.
fn backoff(attempt: u32) -> Duration {
    let cap = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(10))
        .min(MAX_BACKOFF);
    let jitter = rand::random::<f64>();
    cap.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(url: &str, settings: S3Settings) -> anyhow::Result<S3Storage> {
        S3Storage::with_credentials(
            url,
            &settings,
            Credentials {
                access_key_id: "AK".into(),
                secret_access_key: "wJalrSECRET".into(),
                session_token: None,
            },
            "eu-west-1".into(),
        )
    }

    #[test]
    fn urls_and_addressing() {
        let aws = storage("s3://acme-backups/hyper-db/", S3Settings::default()).unwrap();
        assert_eq!(aws.url(), "s3://acme-backups/hyper-db");
        assert_eq!(
            aws.host_and_path(Some(&aws.key("data/ab/x"))),
            (
                "acme-backups.s3.eu-west-1.amazonaws.com".to_string(),
                "/hyper-db/data/ab/x".to_string()
            )
        );
        let custom = storage(
            "s3://bucket",
            S3Settings {
                endpoint: Some("http://127.0.0.1:9000".into()),
                ..S3Settings::default()
            },
        )
        .unwrap();
        assert_eq!(custom.url(), "s3://bucket");
        assert_eq!(
            custom.host_and_path(Some("config")),
            ("127.0.0.1:9000".to_string(), "/bucket/config".to_string())
        );
        assert_eq!(custom.host_and_path(None).1, "/bucket");
    }

    #[test]
    fn bad_urls_and_settings_are_refused() {
        for url in ["s3://", "s3://Upper/x", "s3://b/../x", "s3://b_x"] {
            assert!(storage(url, S3Settings::default()).is_err(), "{url}");
        }
        let e = storage(
            "s3://b",
            S3Settings {
                endpoint: Some("ftp://x".into()),
                ..S3Settings::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("hint:"), "{e}");
        assert!(
            storage(
                "s3://b",
                S3Settings {
                    part_size: Some(1 << 20),
                    ..S3Settings::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(100));
        assert!(backoff(30) <= MAX_BACKOFF);
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn debug_shows_no_credentials() {
        let s = storage("s3://b/p", S3Settings::default()).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("wJalrSECRET"), "{d}");
        assert!(d.contains("s3://b/p"));
    }
}
