//! The S3 backend against real S3 servers on loopback: moto (keeps storage
//! classes and Glacier semantics) and s3s-fs (checks every request's SigV4
//! signature), both through the storage conformance suite, plus what only S3
//! has: storage classes, archive retrieval, multipart uploads, and faults
//! injected by a proxy between lifeboat and the server.

use std::time::Duration;

use lifeboat::storage::s3::{S3Settings, S3Storage};
use lifeboat::storage::{ArchiveState, ErrorKind, PutMode, Storage, Tier, conformance};
use lifeboat::testkit::proxy::{Fault, FaultProxy, Rule};
use lifeboat::testkit::s3::S3Server;

fn settings(endpoint: String) -> S3Settings {
    S3Settings {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        timeout: Some(Duration::from_secs(3)),
        attempts: Some(4),
        ..S3Settings::default()
    }
}

fn storage_with(server: &S3Server, prefix: &str, settings: S3Settings) -> S3Storage {
    S3Storage::with_credentials(
        &server.url(prefix),
        &settings,
        server.credentials(),
        "us-east-1".into(),
    )
    .expect("s3 storage")
}

/// A storage reaching `server` through a fault proxy; `tune` changes the
/// test settings (part size, attempts).
fn through_proxy(
    server: &S3Server,
    prefix: &str,
    tune: impl FnOnce(S3Settings) -> S3Settings,
) -> (FaultProxy, S3Storage) {
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let s = storage_with(server, prefix, tune(settings(proxy.endpoint())));
    (proxy, s)
}

fn storage(server: &S3Server, prefix: &str) -> S3Storage {
    storage_with(server, prefix, settings(server.endpoint()))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn moto_conforms() {
    let server = S3Server::moto().unwrap();
    conformance::run_all(&storage(&server, "conf/repo"));
    // Without a prefix too: the repository is the whole bucket.
    conformance::run_all(&storage(&server, ""));
}

#[test]
fn s3s_fs_conforms_and_checks_signatures() {
    let server = S3Server::s3s_fs().unwrap();
    // s3s-fs checks If-None-Match, but not atomically: concurrent creates of
    // one key may all succeed there (AWS S3 and moto pass the race too).
    conformance::run_all_but_create_race(&storage(&server, "conf/repo"));
    // A wrong secret is refused by the server, and the error says what to check.
    let mut creds = server.credentials();
    creds.secret_access_key = "not-the-secret".into();
    let wrong = S3Storage::with_credentials(
        &server.url("conf/repo"),
        &settings(server.endpoint()),
        creds,
        "us-east-1".into(),
    )
    .unwrap();
    let err = wrong.put("x", b"y", PutMode::Create).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    assert!(err.message.contains("hint:"), "{err}");
    assert!(
        !err.to_string().contains("not-the-secret"),
        "the secret must never appear in an error: {err}"
    );
}

#[test]
fn prefixes_keep_repositories_apart() {
    let server = S3Server::moto().unwrap();
    let a = storage(&server, "a");
    let ab = storage(&server, "ab");
    a.put("config", b"a", PutMode::Create).unwrap();
    ab.put("config", b"ab", PutMode::Create).unwrap();
    assert_eq!(a.list("").unwrap().len(), 1);
    assert_eq!(ab.get("config").unwrap(), b"ab");
    assert_eq!(a.url(), format!("s3://{}/a", server.bucket()));
}

#[test]
fn multipart_uploads_parts_in_parallel_and_round_trips() {
    let server = S3Server::s3s_fs().unwrap();
    let (proxy, s) = through_proxy(&server, "mp", |t| S3Settings {
        part_size: Some(5 << 20),
        ..t
    });
    let data = pattern(12 << 20, 7);
    s.put("data/ab/big", &data, PutMode::Create).unwrap();
    assert_eq!(s.get("data/ab/big").unwrap(), data);
    let parts = proxy
        .requests()
        .iter()
        .filter(|r| r.query.contains("partNumber="))
        .count();
    assert_eq!(parts, 3, "12 MiB in 5 MiB parts: {:?}", proxy.requests());
    // Create refuses an existing object before uploading anything.
    proxy.clear();
    let err = s
        .put("data/ab/big", &pattern(12 << 20, 8), PutMode::Create)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.query.contains("partNumber=")),
        "no part of a refused create is uploaded"
    );
    assert_eq!(s.get("data/ab/big").unwrap(), data);
}

#[test]
fn a_failed_part_is_retried_alone() {
    let server = S3Server::moto().unwrap();
    let (proxy, s) = through_proxy(&server, "mp", |t| S3Settings {
        part_size: Some(5 << 20),
        ..t
    });
    proxy.inject(Rule::new(Fault::Status(503)).query("partNumber=2").times(2));
    proxy.inject(Rule::new(Fault::Drop).query("partNumber=3"));
    let data = pattern(11 << 20, 3);
    s.put("data/cd/pack", &data, PutMode::Create).unwrap();
    assert_eq!(s.get("data/cd/pack").unwrap(), data);
    let log = proxy.requests();
    let sent = |part: &str| {
        log.iter()
            .filter(|r| r.query.contains(&format!("partNumber={part}")))
            .count()
    };
    assert_eq!(
        (sent("1"), sent("2"), sent("3")),
        (1, 3, 2),
        "only the failed parts are sent again: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|r| r.query == "uploads=").count(),
        1,
        "one upload, not a new one per failure"
    );
    assert!(s.retries() >= 3);
}

#[test]
fn an_upload_that_cannot_finish_leaves_nothing() {
    let server = S3Server::moto().unwrap();
    let (proxy, s) = through_proxy(&server, "mp", |t| S3Settings {
        part_size: Some(5 << 20),
        attempts: Some(2),
        ..t
    });
    proxy.inject(
        Rule::new(Fault::Status(500))
            .query("partNumber=2")
            .times(usize::MAX),
    );
    let err = s
        .put("data/ef/pack", &pattern(11 << 20, 1), PutMode::Create)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Other, "{err}");
    assert!(err.message.contains("gave up after 2 attempts"), "{err}");
    assert!(s.list("").unwrap().is_empty(), "no object");
    assert_eq!(
        s.cleanup(Duration::ZERO).unwrap(),
        0,
        "the failed upload was aborted at once, nothing left to clean"
    );
}

#[test]
fn cleanup_aborts_uploads_a_crashed_writer_left() {
    let server = S3Server::moto().unwrap();
    let s = storage(&server, "crash");
    // What a writer killed between its parts leaves: an upload never completed.
    let resp = server
        .request("POST", "crash/data/aa/pack")
        .query("uploads", "")
        .send()
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let other = server
        .request("POST", "elsewhere/data/aa/pack")
        .query("uploads", "")
        .send()
        .unwrap();
    assert_eq!(other.status, 200);
    assert_eq!(
        s.cleanup(Duration::from_secs(3600 * 24 * 365 * 100))
            .unwrap(),
        0
    );
    assert_eq!(
        s.cleanup(Duration::ZERO).unwrap(),
        1,
        "the upload under this repository's prefix is aborted, the other left alone"
    );
    assert_eq!(s.cleanup(Duration::ZERO).unwrap(), 0);
}

#[test]
fn transient_failures_are_retried_and_lost_acknowledgements_are_success() {
    let server = S3Server::s3s_fs().unwrap();
    let (proxy, s) = through_proxy(&server, "flaky", |t| t);
    proxy.inject(Rule::new(Fault::Status(503)).method("PUT"));
    proxy.inject(Rule::new(Fault::Drop).method("PUT"));
    proxy.inject(Rule::new(Fault::CutResponse).method("GET"));
    proxy.inject(Rule::new(Fault::Stall(Duration::from_secs(5))).method("HEAD"));
    s.put("index/1", b"one", PutMode::Create).unwrap();
    assert_eq!(s.get("index/1").unwrap(), b"one");
    assert_eq!(s.head("index/1").unwrap().size, 3);
    // The PUT went through but its answer was lost: the retry finds the
    // object, and since it holds exactly our bytes, the create succeeded.
    proxy.inject(Rule::new(Fault::DropAfterForward).method("PUT"));
    s.put("backups/2", b"two", PutMode::Create).unwrap();
    assert_eq!(s.get("backups/2").unwrap(), b"two");
    // ... but someone else's object under the name is a conflict.
    let err = s.put("backups/2", b"other", PutMode::Create).unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert!(s.retries() >= 4, "retries: {}", s.retries());
}

#[test]
fn a_service_that_stays_down_fails_with_a_hint() {
    let server = S3Server::moto().unwrap();
    let (proxy, s) = through_proxy(&server, "down", |t| S3Settings {
        attempts: Some(3),
        ..t
    });
    proxy.set_down(true);
    let err = s.put("x", b"y", PutMode::Create).unwrap_err();
    assert!(
        err.message.contains("gave up after 3 attempts") && err.message.contains("hint:"),
        "{err}"
    );
    proxy.set_down(false);
    s.put("x", b"y", PutMode::Create).unwrap();
}

#[test]
fn storage_classes_and_glacier_retrieval() {
    let server = S3Server::moto().unwrap();
    let s = storage_with(
        &server,
        "cold",
        S3Settings {
            storage_class: Some("GLACIER".into()),
            wal_storage_class: Some("STANDARD_IA".into()),
            ..settings(server.endpoint())
        },
    );
    s.put_tier("data/00/pack", b"content", PutMode::Create, Tier::Data)
        .unwrap();
    s.put_tier("wal/1/00000001/seg", b"wal", PutMode::Create, Tier::Wal)
        .unwrap();
    s.put("index/0", b"index", PutMode::Create).unwrap();
    let class = |path: &str| s.head(path).unwrap().class.unwrap();
    assert_eq!(class("data/00/pack"), "GLACIER");
    assert_eq!(class("wal/1/00000001/seg"), "STANDARD_IA");
    assert_eq!(class("index/0"), "STANDARD");
    let listed = s.list("data/").unwrap();
    assert!(listed[0].is_archived(), "{listed:?}");
    // Archived: readable only after a retrieval.
    let err = s.get("data/00/pack").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Archived, "{err}");
    assert!(err.message.contains("lifeboat restore"), "{err}");
    assert_eq!(
        s.archive_state("data/00/pack").unwrap(),
        ArchiveState::Archived {
            class: "GLACIER".into()
        }
    );
    assert_eq!(s.archive_state("index/0").unwrap(), ArchiveState::Readable);
    s.request_retrieval("data/00/pack", 1, "Standard").unwrap();
    assert_eq!(
        s.archive_state("data/00/pack").unwrap(),
        ArchiveState::Readable
    );
    assert_eq!(s.get("data/00/pack").unwrap(), b"content");
    // Asking twice is fine.
    s.request_retrieval("data/00/pack", 1, "Standard").unwrap();
}
