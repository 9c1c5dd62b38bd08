//! The behaviour every [`Storage`] backend must share, as an executable suite.
//!
//! The repository layer relies on these semantics (atomic `Create`, precise
//! error kinds, prefix listing), so each backend's tests call [`run_all`] on a
//! fresh, empty store. It panics with a message naming the broken rule. It is
//! not `cfg(test)` so integration tests and out-of-tree backends can use it.

use std::sync::Mutex;

use super::{ErrorKind, ObjectMeta, PutMode, Storage, StorageError};

/// Run every check against `store`, which must be empty; leaves it empty.
pub fn run_all(store: &dyn Storage) {
    run_checks(store, true);
}

/// Every check but the race of concurrent creates, for a service whose
/// conditional write is check-then-write (s3s-fs 0.14: two `If-None-Match: *`
/// PUTs at once may both succeed). AWS S3, moto and the local and memory
/// backends pass `run_all`.
pub fn run_all_but_create_race(store: &dyn Storage) {
    run_checks(store, false);
}

fn run_checks(store: &dyn Storage, create_race: bool) {
    assert_eq!(
        paths(store, ""),
        Vec::<String>::new(),
        "conformance suite needs an empty store: {}",
        store.url()
    );
    put_get_round_trip(store);
    create_does_not_replace(store);
    overwrite_replaces(store);
    missing_objects(store);
    get_range(store);
    head(store);
    list(store);
    delete(store);
    invalid_paths(store);
    if create_race {
        concurrent_create(store);
    }
    assert_eq!(
        paths(store, ""),
        Vec::<String>::new(),
        "store not empty after the suite"
    );
}

fn put_get_round_trip(store: &dyn Storage) {
    let big = pattern(5 << 20);
    for (path, data) in [
        ("rt/small", &b"hello lifeboat"[..]),
        ("rt/empty", &[][..]),
        ("rt/big", &big[..]),
    ] {
        put(store, path, data, PutMode::Create);
        let read = store
            .get(path)
            .unwrap_or_else(|e| panic!("get {path} after put: {e}"));
        assert!(
            read == data,
            "get {path} returned {} bytes, put {} bytes (or content differs)",
            read.len(),
            data.len()
        );
        // Into a buffer that held more before: exactly the object.
        let mut buf = pattern(6 << 20);
        store
            .get_into(path, &mut buf)
            .unwrap_or_else(|e| panic!("get_into {path} after put: {e}"));
        assert!(buf == data, "get_into {path} returned {} bytes", buf.len());
        // Into one that held less.
        let mut buf = pattern(3);
        store
            .get_into(path, &mut buf)
            .unwrap_or_else(|e| panic!("get_into {path} after put: {e}"));
        assert!(buf == data, "get_into {path} returned {} bytes", buf.len());
        if data.len() > 1 << 20 {
            // A range across the backends' read sizes.
            let r = 1000..data.len() as u64 - 1000;
            let got = store
                .get_range(path, r.clone())
                .unwrap_or_else(|e| panic!("get_range {path} {r:?}: {e}"));
            assert!(
                got == data[1000..data.len() - 1000],
                "get_range {path} {r:?}"
            );
        }
        store.delete(path).unwrap();
    }
}

fn create_does_not_replace(store: &dyn Storage) {
    put(store, "cr/obj", b"old", PutMode::Create);
    let err = store
        .put("cr/obj", b"new", PutMode::Create)
        .expect_err("Create on an existing object must fail");
    assert_kind(
        &err,
        ErrorKind::AlreadyExists,
        "Create on an existing object",
    );
    assert_eq!(
        store.get("cr/obj").unwrap(),
        b"old",
        "a failed Create must leave the old content"
    );
    store.delete("cr/obj").unwrap();
}

fn overwrite_replaces(store: &dyn Storage) {
    put(store, "ow/obj", b"first version", PutMode::Overwrite);
    put(store, "ow/obj", b"second", PutMode::Overwrite);
    assert_eq!(
        store.get("ow/obj").unwrap(),
        b"second",
        "Overwrite must replace the content"
    );
    store.delete("ow/obj").unwrap();
}

fn missing_objects(store: &dyn Storage) {
    let path = "missing/nothing-here";
    let checks: [(&str, StorageError); 4] = [
        (
            "get",
            store
                .get(path)
                .expect_err("get of a missing object must fail"),
        ),
        (
            "get_into",
            store
                .get_into(path, &mut Vec::new())
                .expect_err("get_into of a missing object must fail"),
        ),
        (
            "get_range",
            store
                .get_range(path, 0..0)
                .expect_err("get_range of a missing object must fail"),
        ),
        (
            "head",
            store
                .head(path)
                .expect_err("head of a missing object must fail"),
        ),
    ];
    for (op, err) in checks {
        assert_kind(
            &err,
            ErrorKind::NotFound,
            &format!("{op} of a missing object"),
        );
        assert!(
            err.is_not_found(),
            "{op}: is_not_found() must agree with the kind"
        );
        assert_eq!(err.path, path, "{op}: error must carry the object path");
        assert!(
            err.to_string().contains(path),
            "{op}: error message must name the path: {err}"
        );
    }
}

fn get_range(store: &dyn Storage) {
    let data = pattern(1000);
    put(store, "gr/obj", &data, PutMode::Create);
    let range = |r: std::ops::Range<u64>| {
        store
            .get_range("gr/obj", r.clone())
            .unwrap_or_else(|e| panic!("get_range {r:?}: {e}"))
    };
    assert_eq!(range(100..250), &data[100..250], "get_range of the middle");
    assert_eq!(range(0..1000), data, "get_range of the whole object");
    assert_eq!(range(1000..1000), b"", "empty get_range at the end");
    for past_end in [990..1001, 1000..1001, 2000..3000] {
        let err = store
            .get_range("gr/obj", past_end.clone())
            .expect_err("get_range past the end must fail");
        assert_kind(
            &err,
            ErrorKind::Other,
            &format!("get_range {past_end:?} of a 1000-byte object"),
        );
    }
    store.delete("gr/obj").unwrap();
}

fn head(store: &dyn Storage) {
    put(store, "hd/obj", &pattern(12345), PutMode::Create);
    put(store, "hd/empty", b"", PutMode::Create);
    assert_eq!(
        strip(store.head("hd/obj").unwrap()),
        meta("hd/obj", 12345),
        "head of a 12345-byte object"
    );
    assert_eq!(
        strip(store.head("hd/empty").unwrap()),
        meta("hd/empty", 0),
        "head of an empty object"
    );
    store.delete("hd/obj").unwrap();
    store.delete("hd/empty").unwrap();
}

fn list(store: &dyn Storage) {
    let objects = [
        "data/ab/abc1",
        "data/ab/abd2",
        "data/ac/x/y/z",
        "data/b1",
        "database",
        "index/1",
        "top",
    ];
    for (i, path) in objects.iter().enumerate() {
        put(store, path, &pattern(i), PutMode::Create);
    }
    let expect = |prefix: &str, want: &[&str]| {
        assert_eq!(paths(store, prefix), want, "list({prefix:?})");
    };
    expect("", &objects);
    expect(
        "data/",
        &["data/ab/abc1", "data/ab/abd2", "data/ac/x/y/z", "data/b1"],
    );
    expect("data/a", &["data/ab/abc1", "data/ab/abd2", "data/ac/x/y/z"]);
    expect("data/ab/abc", &["data/ab/abc1"]);
    expect(
        "data",
        &[
            "data/ab/abc1",
            "data/ab/abd2",
            "data/ac/x/y/z",
            "data/b1",
            "database",
        ],
    );
    expect("data/ac/x/y/z", &["data/ac/x/y/z"]);
    expect("nothing/", &[]);
    expect("data/zz", &[]);
    expect("data/ab/abc1/deeper", &[]);
    let mut listed = store.list("data/ab/").unwrap();
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    let listed: Vec<_> = listed.into_iter().map(strip).collect();
    assert_eq!(
        listed,
        [meta("data/ab/abc1", 0), meta("data/ab/abd2", 1)],
        "list must report sizes"
    );
    for path in objects {
        store.delete(path).unwrap();
    }
}

fn delete(store: &dyn Storage) {
    put(store, "del/obj", b"bye", PutMode::Create);
    store
        .delete("del/obj")
        .expect("delete of an existing object");
    let err = store
        .get("del/obj")
        .expect_err("get after delete must fail");
    assert_kind(&err, ErrorKind::NotFound, "get after delete");
    assert!(
        paths(store, "del/").is_empty(),
        "deleted object still listed"
    );
    store
        .delete("del/obj")
        .expect("delete of a missing object must be Ok");
    store
        .delete("del/never/existed")
        .expect("delete in a missing directory must be Ok");
}

fn invalid_paths(store: &dyn Storage) {
    for path in ["", "/abs", "a/../b", "a//b", "..", "a/./b", "trailing/"] {
        let results: [(&str, Option<StorageError>); 6] = [
            ("put", store.put(path, b"x", PutMode::Overwrite).err()),
            ("get", store.get(path).err()),
            ("get_into", store.get_into(path, &mut Vec::new()).err()),
            ("get_range", store.get_range(path, 0..0).err()),
            ("head", store.head(path).err()),
            ("delete", store.delete(path).err()),
        ];
        for (op, err) in results {
            let err = err.unwrap_or_else(|| panic!("{op} must reject invalid path {path:?}"));
            assert_kind(
                &err,
                ErrorKind::Other,
                &format!("{op} of invalid path {path:?}"),
            );
            assert!(
                err.message.contains("invalid"),
                "{op} {path:?}: message should say the path is invalid: {err}"
            );
        }
    }
    for prefix in ["/abs", "../", "a/../b", "a//"] {
        assert!(
            store.list(prefix).is_err(),
            "list must reject prefix {prefix:?}"
        );
    }
    assert!(
        paths(store, "").is_empty(),
        "rejected puts must not store anything"
    );
}

fn concurrent_create(store: &dyn Storage) {
    const THREADS: u8 = 8;
    let path = "race/obj";
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for id in 0..THREADS {
            let outcomes = &outcomes;
            scope.spawn(move || {
                let data = vec![id; 64 << 10];
                let result = store.put(path, &data, PutMode::Create).map_err(|e| e.kind);
                outcomes.lock().unwrap().push((id, result));
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let winners: Vec<u8> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent Create must succeed: {outcomes:?}"
    );
    for (id, result) in &outcomes {
        assert!(
            matches!(result, Ok(()) | Err(ErrorKind::AlreadyExists)),
            "thread {id}: losing Create must fail with AlreadyExists, got {result:?}"
        );
    }
    assert_eq!(
        store.get(path).unwrap(),
        vec![winners[0]; 64 << 10],
        "content must be the winner's"
    );
    assert_eq!(
        paths(store, "race/"),
        [path],
        "no leftovers from losing writers"
    );
    store.delete(path).unwrap();
}

fn put(store: &dyn Storage, path: &str, data: &[u8], mode: PutMode) {
    store
        .put(path, data, mode)
        .unwrap_or_else(|e| panic!("put {path} ({mode:?}): {e}"));
}

/// Sorted paths under `prefix`; also checks that no temp file leaks into a
/// listing and that listed paths really start with the prefix.
fn paths(store: &dyn Storage, prefix: &str) -> Vec<String> {
    let listed = store
        .list(prefix)
        .unwrap_or_else(|e| panic!("list({prefix:?}): {e}"));
    let mut paths: Vec<String> = listed.into_iter().map(|m| m.path).collect();
    paths.sort();
    for (i, path) in paths.iter().enumerate() {
        assert!(
            path.starts_with(prefix),
            "list({prefix:?}) returned {path:?}"
        );
        assert!(
            !path.split('/').any(|c| c.starts_with(".tmp-")),
            "list({prefix:?}) returned temp file {path:?}"
        );
        assert!(
            i == 0 || paths[i - 1] != *path,
            "list({prefix:?}) returned {path:?} twice"
        );
    }
    paths
}

fn assert_kind(err: &StorageError, want: ErrorKind, what: &str) {
    assert_eq!(err.kind, want, "{what}: wrong error kind ({err})");
}

fn meta(path: &str, size: u64) -> ObjectMeta {
    ObjectMeta {
        path: path.to_string(),
        size,
        modified: None,
        class: None,
    }
}

/// Backends differ in whether they know modification times; compare the rest.
fn strip(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        modified: None,
        class: None,
        ..m
    }
}

/// Deterministic, non-repeating-per-page bytes, so offset mix-ups are caught.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}
