use lifeboat::pg::conninfo::{ConnInfo, ConnInfoError, UriPart, is_secret_keyword, redacted};

fn parse(s: &str) -> ConnInfo {
    ConnInfo::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn pairs(info: &ConnInfo) -> Vec<(&str, &str)> {
    info.iter().collect()
}

fn err(s: &str) -> ConnInfoError {
    match ConnInfo::parse(s) {
        Ok(info) => panic!("{s:?} should not parse, got {info}"),
        Err(e) => e,
    }
}

#[test]
fn simple_uri() {
    let info = parse("postgres://postgres@localhost:5432/hyper_db");
    assert_eq!(
        pairs(&info),
        [
            ("user", "postgres"),
            ("host", "localhost"),
            ("port", "5432"),
            ("dbname", "hyper_db")
        ]
    );
    assert_eq!(info.dbname(), Some("hyper_db"));
    assert_eq!(info.user(), Some("postgres"));
    assert_eq!(info.host(), Some("localhost"));
    assert_eq!(info.port(), Some("5432"));
    assert_eq!(info.password(), None);
}

#[test]
fn uri_with_password_and_params() {
    let info = parse("postgresql://u:p%40ss@h/db?sslmode=require&application_name=x");
    assert_eq!(
        pairs(&info),
        [
            ("user", "u"),
            ("password", "p@ss"),
            ("host", "h"),
            ("dbname", "db"),
            ("sslmode", "require"),
            ("application_name", "x"),
        ]
    );
    assert_eq!(info.password(), Some("p@ss"));
}

#[test]
fn uri_socket_directory_in_query() {
    let info = parse("postgres:///db?host=/tmp/sock");
    assert_eq!(pairs(&info), [("dbname", "db"), ("host", "/tmp/sock")]);
}

#[test]
fn uri_percent_encoded_socket_directory() {
    let info = parse("postgres://%2Ftmp%2Fsock/db");
    assert_eq!(pairs(&info), [("host", "/tmp/sock"), ("dbname", "db")]);
}

#[test]
fn uri_minimal_forms() {
    assert!(parse("postgres://").is_empty());
    assert!(parse("postgresql://").is_empty());
    assert!(parse("postgres:///").is_empty());
    assert_eq!(pairs(&parse("postgres://h")), [("host", "h")]);
    assert_eq!(pairs(&parse("postgres://h/")), [("host", "h")]);
    assert_eq!(pairs(&parse("postgres://h?")), [("host", "h")]);
    assert_eq!(pairs(&parse("postgres://h/?")), [("host", "h")]);
    assert_eq!(pairs(&parse("postgres://user@")), [("user", "user")]);
    assert_eq!(
        pairs(&parse("postgres://:pw@h")),
        [("password", "pw"), ("host", "h")]
    );
    assert_eq!(
        pairs(&parse("postgres://u:@h")),
        [("user", "u"), ("host", "h")]
    );
    assert_eq!(pairs(&parse("postgres://:5433")), [("port", "5433")]);
    assert_eq!(
        pairs(&parse("postgres://h/a/b")),
        [("host", "h"), ("dbname", "a/b")]
    );
}

#[test]
fn uri_percent_encoding_everywhere() {
    let info =
        parse("postgres://us%65r:p%3Aw%2F%3F@h%6Fst:54%332/d%20b?applic%61tion_name=a%26b%3Dc");
    assert_eq!(
        pairs(&info),
        [
            ("user", "user"),
            ("password", "p:w/?"),
            ("host", "host"),
            ("port", "5432"),
            ("dbname", "d b"),
            ("application_name", "a&b=c"),
        ]
    );
    // "+" is not a space in libpq URIs; UTF-8 survives, encoded or not.
    let info = parse("postgres://h/a+b?application_name=%C3%A9t%C3%A9-%E2%9C%93-ü");
    assert_eq!(info.dbname(), Some("a+b"));
    assert_eq!(info.get("application_name"), Some("été-✓-ü"));
}

#[test]
fn uri_multiple_hosts() {
    let info = parse("postgres://h1:5432,h2:5433/db?target_session_attrs=read-write");
    assert_eq!(info.host(), Some("h1,h2"));
    assert_eq!(info.port(), Some("5432,5433"));
    assert_eq!(info.dbname(), Some("db"));
    assert_eq!(info.get("target_session_attrs"), Some("read-write"));

    // A host without a port gets an empty entry (libpq's default port).
    let info = parse("postgres://h1:5432,h2,h3:5434");
    assert_eq!(info.host(), Some("h1,h2,h3"));
    assert_eq!(info.port(), Some("5432,,5434"));

    // As in libpq, the port list then has only empty entries: default ports,
    // PGPORT does not apply.
    let info = parse("postgres://u@h1,h2/db");
    assert_eq!(info.host(), Some("h1,h2"));
    assert_eq!(info.port(), Some(","));
}

#[test]
fn uri_ipv6_hosts() {
    let info = parse("postgres://[::1]:5432/db");
    assert_eq!(
        pairs(&info),
        [("host", "::1"), ("port", "5432"), ("dbname", "db")]
    );

    let info = parse("postgresql://u@[2001:db8::1234]/db");
    assert_eq!(info.host(), Some("2001:db8::1234"));
    assert_eq!(info.port(), None);

    let info = parse("postgres://[::1]:5432,[fe80::1%25eth0],h:5434?connect_timeout=3");
    assert_eq!(info.host(), Some("::1,fe80::1%eth0,h"));
    assert_eq!(info.port(), Some("5432,,5434"));
    assert_eq!(info.get("connect_timeout"), Some("3"));

    assert_eq!(parse("postgres://[::1]").host(), Some("::1"));
    assert_eq!(
        parse("postgres://[::1]?sslmode=disable").host(),
        Some("::1")
    );
}

#[test]
fn uri_query_overrides_earlier_parts() {
    let info = parse("postgres://u@h:5432/db?dbname=other&port=6543&user=v&port=7654");
    assert_eq!(
        pairs(&info),
        [
            ("user", "v"),
            ("host", "h"),
            ("port", "7654"),
            ("dbname", "other")
        ]
    );
}

#[test]
fn uri_jdbc_ssl_true() {
    let info = parse("postgres://h/db?ssl=true");
    assert_eq!(info.get("sslmode"), Some("require"));
    assert_eq!(info.get("ssl"), None);
}

#[test]
fn uri_trailing_ampersand_and_empty_value() {
    let info = parse("postgres://h/db?application_name=&sslmode=prefer&");
    assert_eq!(info.get("application_name"), Some(""));
    assert_eq!(info.get("sslmode"), Some("prefer"));
}

#[test]
fn uri_errors() {
    assert_eq!(
        err("postgres://h/db?sslmode"),
        ConnInfoError::MissingQueryEquals { position: 17 }
    );
    assert_eq!(
        err("postgres://h/db?a=1&&b=2"),
        ConnInfoError::MissingQueryEquals { position: 21 }
    );
    assert_eq!(
        err("postgres://h/db?sslmode=a=b"),
        ConnInfoError::ExtraQueryEquals { position: 17 }
    );
    assert_eq!(
        err("postgres://h/db?=x"),
        ConnInfoError::EmptyKeyword { position: 17 }
    );
    assert_eq!(
        err("postgres://h/db?ssl-mode=x"),
        ConnInfoError::InvalidKeyword { position: 17 }
    );
    assert_eq!(
        err("postgres://u:p%zz@h/db"),
        ConnInfoError::InvalidPercentEncoding {
            part: UriPart::Password,
            position: 15
        }
    );
    assert_eq!(
        err("postgres://u:p%4@h/db"),
        ConnInfoError::InvalidPercentEncoding {
            part: UriPart::Password,
            position: 15
        }
    );
    assert_eq!(
        err("postgres://h/d%00b"),
        ConnInfoError::PercentEncodedNul {
            part: UriPart::Dbname,
            position: 15
        }
    );
    assert_eq!(
        err("postgres://h/%ff"),
        ConnInfoError::InvalidUtf8 {
            part: UriPart::Dbname
        }
    );
    assert_eq!(
        err("postgres://[::1/db"),
        ConnInfoError::UnterminatedIpv6Host { position: 12 }
    );
    assert_eq!(
        err("postgres://[]/db"),
        ConnInfoError::EmptyIpv6Host { position: 12 }
    );
    assert_eq!(
        err("postgres://[::1]x/db"),
        ConnInfoError::UnexpectedAfterIpv6Host { position: 17 }
    );
    assert_eq!(
        err("postgres://h:54x32/db"),
        ConnInfoError::InvalidPort { uri: true }
    );
    assert_eq!(
        err("postgres://h:0/db"),
        ConnInfoError::InvalidPort { uri: true }
    );
    assert_eq!(
        err("postgres://h:65536/db"),
        ConnInfoError::InvalidPort { uri: true }
    );
}

#[test]
fn unencoded_slash_in_password_gives_a_hint_not_the_password() {
    // libpq reads "user" as the host and "pa" as its port here.
    let e = err("postgres://user:pa/ss@host/db");
    assert_eq!(e, ConnInfoError::InvalidPort { uri: true });
    let msg = e.to_string();
    assert!(msg.contains("percent-encode"), "{msg}");
    assert!(!msg.contains("pa/ss") && !msg.contains("ss@"), "{msg}");
}

#[test]
fn error_messages_are_lowercase_and_never_contain_the_password() {
    let secret = "Sup3rS3cr3t";
    let cases = [
        format!("postgres://u:{secret}%zz@h/db"),
        format!("postgres://u:{secret}%00@h/db"),
        format!("postgres://u:{secret}%ff@h/db"),
        format!("postgres://h/db?password={secret}&x"),
        format!("postgres://h/db?password={secret}=x"),
        format!("postgres://u:{secret}@[::1"),
        format!("postgres://u:{secret}@[::1]z"),
        format!("postgres://u:{secret}/x@h/db"),
        format!("host=h password={secret} {secret}"),
        format!("host=h password={secret} x{secret}y"),
        format!("host=h password='{secret}"),
        format!("host=h password={secret} ={secret}"),
        format!("host=h password={secret} a-{secret}=1"),
        format!("host=h port={secret}"),
    ];
    for case in &cases {
        let msg = err(case).to_string();
        assert!(!msg.contains(secret), "{case:?} gave {msg:?}");
        assert!(!msg.contains("3cr3t"), "{case:?} gave {msg:?}");
        let first = msg.chars().next().unwrap();
        assert!(first.is_ascii_lowercase(), "{msg:?}");
        assert!(!msg.contains('\n'), "{msg:?}");
    }
}

#[test]
fn keyword_value_basic() {
    let info = parse("host=localhost port=5432 dbname=hyper_db user=postgres");
    assert_eq!(
        pairs(&info),
        [
            ("host", "localhost"),
            ("port", "5432"),
            ("dbname", "hyper_db"),
            ("user", "postgres")
        ]
    );
}

#[test]
fn keyword_value_quoting() {
    let info = parse(r"host=... port=5432 dbname='a b' password='x\'y'");
    assert_eq!(info.get("host"), Some("..."));
    assert_eq!(info.dbname(), Some("a b"));
    assert_eq!(info.password(), Some("x'y"));

    let info = parse(r"dbname='' user='back\\slash' application_name=a\ b\'c");
    assert_eq!(info.dbname(), Some(""));
    assert_eq!(info.user(), Some(r"back\slash"));
    assert_eq!(info.get("application_name"), Some("a b'c"));

    // Blanks around "=", tabs and newlines between pairs.
    let info = parse("  host =  h\t\nport= 5433\r\n dbname ='x=y'  ");
    assert_eq!(
        pairs(&info),
        [("host", "h"), ("port", "5433"), ("dbname", "x=y")]
    );

    // After a closing quote the next keyword may follow directly (as libpq).
    let info = parse("dbname='a'user=b");
    assert_eq!(pairs(&info), [("dbname", "a"), ("user", "b")]);

    // An empty unquoted value at the end, non-ASCII values.
    let info = parse("application_name=été host=");
    assert_eq!(pairs(&info), [("application_name", "été"), ("host", "")]);

    // Values may contain "=", "@" and "/" unquoted.
    let info = parse("options=-csearch_path=x password=a@b/c");
    assert_eq!(info.get("options"), Some("-csearch_path=x"));
    assert_eq!(info.password(), Some("a@b/c"));
}

#[test]
fn keyword_value_later_overrides_earlier() {
    let info = parse("host=a port=1 host=b user=u port=2");
    assert_eq!(pairs(&info), [("host", "b"), ("port", "2"), ("user", "u")]);
}

#[test]
fn keyword_value_errors() {
    assert_eq!(
        err("host=h dbname"),
        ConnInfoError::MissingEquals { position: 8 }
    );
    assert_eq!(
        err("host=h db name=x"),
        ConnInfoError::MissingEquals { position: 8 }
    );
    assert_eq!(
        err("host=h =x"),
        ConnInfoError::EmptyKeyword { position: 8 }
    );
    assert_eq!(
        err("host=h db-name=x"),
        ConnInfoError::InvalidKeyword { position: 8 }
    );
    assert_eq!(
        err(r"host=h password='abc\'"),
        ConnInfoError::UnterminatedQuote { position: 17 }
    );
    assert_eq!(err("port=abc"), ConnInfoError::InvalidPort { uri: false });
    assert_eq!(
        err("port='5432,x'"),
        ConnInfoError::InvalidPort { uri: false }
    );
    assert!(!err("port=abc").to_string().contains("percent-encode"));
    assert_eq!(parse("port='5432, 5433,'").port(), Some("5432, 5433,"));
}

#[test]
fn empty_and_bare_strings() {
    assert!(parse("").is_empty());
    assert!(parse("   \t ").is_empty());
    assert_eq!(parse("").to_conninfo_string(), "");
    assert_eq!(parse("").to_string(), "");
    // Like pg_dump -d: no "=" and no URI prefix means a database name.
    assert_eq!(pairs(&parse("hyper_db")), [("dbname", "hyper_db")]);
    // The URI prefixes are case-sensitive in libpq.
    assert_eq!(parse("POSTGRES://h").dbname(), Some("POSTGRES://h"));
}

#[test]
fn set_get_remove() {
    let mut info = parse("host=h port=5432");
    info.set("dbname", "db");
    info.set("host", "h2");
    assert_eq!(
        pairs(&info),
        [("host", "h2"), ("port", "5432"), ("dbname", "db")]
    );
    assert_eq!(info.remove("port"), Some("5432".to_string()));
    assert_eq!(info.remove("port"), None);
    assert_eq!(info.get("port"), None);
    assert_eq!(pairs(&info), [("host", "h2"), ("dbname", "db")]);
}

#[test]
fn with_dbname_and_without_password() {
    let info = parse("postgres://u:pw@h/db");
    let other = info.with_dbname("postgres");
    assert_eq!(other.dbname(), Some("postgres"));
    assert_eq!(info.dbname(), Some("db"));
    assert_eq!(other.password(), Some("pw"));

    let plain = info.without_password();
    assert_eq!(plain.password(), None);
    assert_eq!(
        pairs(&plain),
        [("user", "u"), ("host", "h"), ("dbname", "db")]
    );
    assert_eq!(info.password(), Some("pw"));

    assert_eq!(parse("host=h").with_dbname("x").dbname(), Some("x"));
}

#[test]
fn to_conninfo_string_quotes_everything_and_leaves_out_the_password() {
    let info = parse(r"postgres://u:s3cret@h:5433/my%20db?application_name=it's%5Cok");
    assert_eq!(
        info.to_conninfo_string(),
        r"user='u' host='h' port='5433' dbname='my db' application_name='it\'s\\ok'"
    );
    assert!(!info.to_conninfo_string().contains("s3cret"));
}

#[test]
fn round_trip_through_to_conninfo_string() {
    let cases = [
        "postgres://postgres@localhost:5432/hyper_db",
        "postgresql://u:p%40ss@h/db?sslmode=require&application_name=x",
        "postgres:///db?host=/tmp/sock",
        "postgres://%2Ftmp%2Fsock/db",
        "postgres://h1:5432,h2:5433,h3/db?target_session_attrs=any",
        "postgres://[::1]:5432,[2001:db8::2]/db",
        r"host=... port=5432 dbname='a b' password='x\'y'",
        r"dbname='' user='back\\slash' application_name=a\ b\'c options='-c a=b'",
        "application_name='  lead and trail  ' host=h\tport=1",
        "application_name='tab\there\nnewline' dbname=été",
        "",
        "hyper_db",
    ];
    for case in cases {
        let info = parse(case);
        let text = info.to_conninfo_string();
        let again = ConnInfo::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(again, info.without_password(), "{case:?} -> {text:?}");
        assert_eq!(pairs(&again), pairs(&info.without_password()), "{case:?}");
        // And Display's form parses back too (secrets aside).
        let shown = ConnInfo::parse(&info.to_string()).unwrap();
        let mut expected = info.clone();
        if expected.password().is_some() {
            expected.set("password", "********");
        }
        assert_eq!(shown, expected, "{case:?}");
    }
}

#[test]
fn equality_ignores_order() {
    assert_eq!(parse("host=h port=1"), parse("port=1 host=h"));
    assert_ne!(parse("host=h port=1"), parse("host=h port=2"));
    assert_ne!(parse("host=h port=1"), parse("host=h"));
    assert_eq!(parse("postgres://u@h/db"), parse("dbname=db host=h user=u"));
}

#[test]
fn display_and_debug_never_show_secrets() {
    let secret = "Sup3rS3cr3t";
    let cases = [
        format!("postgres://u:{secret}@h/db"),
        format!("postgres://h/db?password={secret}"),
        format!("host=h password={secret} dbname=db"),
        format!("host=h password='{secret} with spaces' dbname=db"),
        format!("host=h sslpassword={secret}"),
        format!("host=h oauth_client_secret={secret}"),
    ];
    for case in &cases {
        let info = parse(case);
        let shown = info.to_string();
        let debug = format!("{info:?}");
        let pretty = format!("{info:#?}");
        for text in [&shown, &debug, &pretty] {
            assert!(!text.contains(secret), "{case:?} shown as {text:?}");
            assert!(text.contains("=********"), "{case:?} shown as {text:?}");
        }
    }
    let info = parse("postgres://postgres:pw@localhost:5432/hyper_db");
    assert_eq!(
        info.to_string(),
        "user=postgres password=******** host=localhost port=5432 dbname=hyper_db"
    );
    assert_eq!(
        format!("{info:?}"),
        "ConnInfo(user=postgres password=******** host=localhost port=5432 dbname=hyper_db)"
    );
    // Values that need quoting are quoted.
    assert_eq!(
        parse(r"dbname='a b' user='' options=x\'y").to_string(),
        r"dbname='a b' user='' options='x\'y'"
    );
    assert!(is_secret_keyword("password"));
    assert!(is_secret_keyword("sslpassword"));
    assert!(!is_secret_keyword("passfile"));
}

#[test]
fn from_str() {
    let info: ConnInfo = "host=h".parse().unwrap();
    assert_eq!(info.host(), Some("h"));
    assert!("host".parse::<ConnInfo>().is_ok());
    assert!("host=h x".parse::<ConnInfo>().is_err());
}

#[test]
fn redacted_hides_passwords() {
    let cases = [
        ("postgres://u:secret@h/db", "postgres://u:********@h/db"),
        ("postgres://u:sec%zzret@h/db", "postgres://u:********@h/db"),
        (
            "postgresql://u:se@cr/et@h/db",
            "postgresql://u:********@h/db",
        ),
        ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
        (
            "postgres://h/db?password=secret&sslmode=x%zz",
            "postgres://h/db?password=********&sslmode=x%zz",
        ),
        (
            "postgres://h/db?sslpassword=se@cret&x",
            "postgres://h/db?sslpassword=********&x",
        ),
        (
            "host=h password=secret dbname=x y",
            "host=h password=******** dbname=x y",
        ),
        (
            r"host=h password = 'sec ret\' more' user=u x",
            "host=h password=******** user=u x",
        ),
        (
            "host=h password='unterminated secret",
            "host=h password=********",
        ),
        (r"password=sec\ ret x", "password=******** x"),
        (
            "host=h sslpassword=secret oauth_client_secret=hunter2 x",
            "host=h sslpassword=******** oauth_client_secret=******** x",
        ),
        ("dbname=passwords host", "dbname=passwords host"),
        ("", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(redacted(input), expected, "{input:?}");
        assert!(!redacted(input).contains("cret@"), "{input:?}");
        assert!(!redacted(input).contains("=secret"), "{input:?}");
        assert!(!redacted(input).contains("hunter2"), "{input:?}");
    }
}
