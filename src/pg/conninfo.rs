//! libpq connection strings.
//!
//! [`ConnInfo`] parses both forms libpq accepts and can hand the result to
//! PostgreSQL's client programs:
//!
//! * URIs: `postgres://` or `postgresql://`, then optional `user[:password]@`,
//!   one or more `host[:port]` separated by commas (IPv6 hosts in brackets),
//!   an optional `/dbname` and optional `?keyword=value&...` parameters.
//!   Every part is percent-decoded. URI parts map to the keywords `user`,
//!   `password`, `host`, `port` and `dbname`.
//! * keyword/value strings: `host=db port=5432 dbname='my db'`, with libpq's
//!   quoting: a value may be wrapped in single quotes, and a backslash escapes
//!   the next character (`'it\'s'`, `a\ b`).
//!
//! As with `pg_dump -d`, a string that is neither (no URI prefix and no `=`)
//! is a bare database name, and an empty string is valid: every setting then
//! comes from the `PG*` environment variables and libpq's defaults.
//!
//! Keywords are stored in order; a keyword given twice keeps its first
//! position and its last value, as libpq keeps the last value. Keywords are
//! not checked against libpq's list (which grows with every PostgreSQL
//! release); only their spelling is (letters, digits and `_`). Ports are
//! checked to be numbers.
//!
//! # Secrets
//!
//! Invariant: **the password never leaves a [`ConnInfo`] except through
//! [`ConnInfo::password`] and [`ConnInfo::get`]**.
//!
//! * [`Display`](fmt::Display) and [`Debug`](fmt::Debug) show
//!   `password=********` instead of the value (likewise for the other secret
//!   keywords, see [`is_secret_keyword`]).
//! * [`ConnInfo::to_conninfo_string`], the form meant for a command line,
//!   leaves the password out: command lines are visible to every user of the
//!   host. Pass the password to the child process in the `PGPASSWORD`
//!   environment variable instead.
//! * [`ConnInfoError`] messages name positions and parts of the string,
//!   never any text from it.
//! * [`redacted`] hides whatever looks like a password in a raw string that
//!   could not be parsed, so that it can be quoted in a message.

use std::fmt;
use std::str::FromStr;

/// What [`ConnInfo`]'s `Display`/`Debug` and [`redacted`] show instead of a secret.
pub const REDACTED: &str = "********";

const URI_PREFIXES: [&str; 2] = ["postgresql://", "postgres://"];

/// Keywords whose values are secrets: never displayed.
const SECRET_KEYWORDS: [&str; 3] = ["password", "sslpassword", "oauth_client_secret"];

/// Whether `keyword`'s value is a secret that `Display`/`Debug` must hide.
pub fn is_secret_keyword(keyword: &str) -> bool {
    SECRET_KEYWORDS.contains(&keyword)
}

/// A parsed libpq connection string: an ordered list of keyword/value pairs,
/// each keyword at most once. See the [module documentation](self).
#[derive(Clone, Default, Eq)]
pub struct ConnInfo {
    params: Vec<(String, String)>,
}

/// Which part of a connection URI an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriPart {
    User,
    Password,
    Host,
    Port,
    Dbname,
    QueryParameter,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriPart::User => "user name",
            UriPart::Password => "password",
            UriPart::Host => "host",
            UriPart::Port => "port",
            UriPart::Dbname => "database name",
            UriPart::QueryParameter => "query parameter",
        })
    }
}

/// Why a connection string did not parse.
///
/// Positions are 1-based character positions in the whole string. Messages
/// never contain text from the string, so they cannot leak a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnInfoError {
    #[error("missing \"=\" after the keyword at position {position}")]
    MissingEquals { position: usize },
    #[error("missing keyword before the \"=\" at position {position}")]
    EmptyKeyword { position: usize },
    #[error(
        "invalid keyword at position {position} (keywords contain only letters, digits and \"_\")"
    )]
    InvalidKeyword { position: usize },
    #[error("unterminated quoted value starting at position {position}")]
    UnterminatedQuote { position: usize },
    #[error(
        "invalid percent-encoding in the {part} at position {position} (expected \"%\" and two hex digits)"
    )]
    InvalidPercentEncoding { part: UriPart, position: usize },
    #[error("percent-encoded NUL byte (%00) in the {part} at position {position}")]
    PercentEncodedNul { part: UriPart, position: usize },
    #[error("the {part} is not valid UTF-8 once percent-decoded")]
    InvalidUtf8 { part: UriPart },
    #[error("missing \"]\" after the IPv6 host starting at position {position}")]
    UnterminatedIpv6Host { position: usize },
    #[error("empty IPv6 host at position {position}")]
    EmptyIpv6Host { position: usize },
    #[error(
        "unexpected character at position {position} after an IPv6 host (expected \":\", \"/\", \"?\" or \",\")"
    )]
    UnexpectedAfterIpv6Host { position: usize },
    #[error("query parameter at position {position} has no \"=\"")]
    MissingQueryEquals { position: usize },
    #[error("query parameter at position {position} has more than one \"=\"")]
    ExtraQueryEquals { position: usize },
    #[error("{}", invalid_port_message(*uri))]
    InvalidPort { uri: bool },
}

fn invalid_port_message(uri: bool) -> &'static str {
    if uri {
        "invalid port (expected a number from 1 to 65535); hint: percent-encode \"@\", \":\", \"/\" and \"?\" in the user name and password (\"%40\", \"%3A\", \"%2F\", \"%3F\")"
    } else {
        "invalid port (expected a number from 1 to 65535)"
    }
}

impl ConnInfo {
    /// An empty connection string: everything from `PG*` variables and defaults.
    pub fn new() -> ConnInfo {
        ConnInfo::default()
    }

    /// Parses a URI, a keyword/value string, or a bare database name.
    pub fn parse(s: &str) -> Result<ConnInfo, ConnInfoError> {
        let mut info = if let Some(prefix) = uri_prefix(s) {
            parse_uri(s, prefix.len())?
        } else if s.contains('=') || s.chars().all(is_space) {
            parse_keyword_value(s)?
        } else {
            let mut info = ConnInfo::new();
            info.set("dbname", s);
            info
        };
        info.validate_port(uri_prefix(s).is_some())?;
        info.params.shrink_to_fit();
        Ok(info)
    }

    fn validate_port(&self, uri: bool) -> Result<(), ConnInfoError> {
        let Some(ports) = self.get("port") else {
            return Ok(());
        };
        // libpq allows an empty entry (the default port) and surrounding blanks.
        let valid = ports.split(',').all(|port| {
            let port = port.trim_matches(is_space);
            port.is_empty()
                || (port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok_and(|p| p != 0))
        });
        if valid {
            Ok(())
        } else {
            Err(ConnInfoError::InvalidPort { uri })
        }
    }

    /// The value of `keyword`, if set.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `keyword` to `value`, replacing an earlier value in its place.
    pub fn set(&mut self, keyword: impl Into<String>, value: impl Into<String>) {
        let keyword = keyword.into();
        let value = value.into();
        match self.params.iter_mut().find(|(k, _)| *k == keyword) {
            Some((_, v)) => *v = value,
            None => self.params.push((keyword, value)),
        }
    }

    /// Removes `keyword`, returning its value if it was set.
    pub fn remove(&mut self, keyword: &str) -> Option<String> {
        let index = self.params.iter().position(|(k, _)| k == keyword)?;
        Some(self.params.remove(index).1)
    }

    /// Whether no keyword is set.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The keyword/value pairs in order, secrets included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The password, if the string has one.
    pub fn password(&self) -> Option<&str> {
        self.get("password")
    }

    /// A copy without the password.
    pub fn without_password(&self) -> ConnInfo {
        let mut info = self.clone();
        info.remove("password");
        info
    }

    /// The `dbname` keyword, if set.
    pub fn dbname(&self) -> Option<&str> {
        self.get("dbname")
    }

    /// A copy connecting to database `db` instead.
    pub fn with_dbname(&self, db: &str) -> ConnInfo {
        let mut info = self.clone();
        info.set("dbname", db);
        info
    }

    /// The `user` keyword, if set.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The `host` keyword (possibly a comma-separated list), if set.
    pub fn host(&self) -> Option<&str> {
        self.get("host")
    }

    /// The `port` keyword (possibly a comma-separated list), if set.
    pub fn port(&self) -> Option<&str> {
        self.get("port")
    }

    /// The keyword/value form with every value single-quoted, for the `-d`
    /// option of pg_dump, pg_restore, psql and pg_dumpall.
    ///
    /// **The password is left out**, as command lines are visible to other
    /// users: give it to the child in `PGPASSWORD`. The other secret keywords
    /// (`sslpassword`, `oauth_client_secret`) are kept, as libpq reads them
    /// from no environment variable.
    ///
    /// An empty `ConnInfo` gives an empty string; pass no `-d` at all then.
    pub fn to_conninfo_string(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.params.iter().filter(|(k, _)| k != "password") {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            push_quoted(&mut out, v);
        }
        out
    }
}

impl PartialEq for ConnInfo {
    /// Equal when the same keywords have the same values, in any order.
    fn eq(&self, other: &ConnInfo) -> bool {
        self.params.len() == other.params.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl FromStr for ConnInfo {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<ConnInfo, ConnInfoError> {
        ConnInfo::parse(s)
    }
}

/// Keyword/value form, quoting only where needed, secrets shown as `********`.
impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (k, v) in &self.params {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            if is_secret_keyword(k) {
                out.push_str(REDACTED);
            } else if v.is_empty() || v.chars().any(|c| is_space(c) || c == '\'' || c == '\\') {
                push_quoted(&mut out, v);
            } else {
                out.push_str(v);
            }
        }
        f.write_str(&out)
    }
}

/// Shows the `Display` form: secrets are never shown.
impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnInfo")
            .field(&format_args!("{self}"))
            .finish()
    }
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
}

/// libpq's `isspace` in the C locale.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn is_keyword_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn uri_prefix(s: &str) -> Option<&'static str> {
    URI_PREFIXES.into_iter().find(|p| s.starts_with(p))
}

/// Keyword/value parsing, as libpq's `conninfo_parse`.
fn parse_keyword_value(s: &str) -> Result<ConnInfo, ConnInfoError> {
    let c: Vec<char> = s.chars().collect();
    let n = c.len();
    let mut info = ConnInfo::new();
    let mut i = 0;
    while i < n {
        if is_space(c[i]) {
            i += 1;
            continue;
        }
        let keyword_start = i;
        while i < n && c[i] != '=' && !is_space(c[i]) {
            i += 1;
        }
        let keyword: String = c[keyword_start..i].iter().collect();
        while i < n && is_space(c[i]) {
            i += 1;
        }
        if i == n || c[i] != '=' {
            return Err(ConnInfoError::MissingEquals {
                position: keyword_start + 1,
            });
        }
        if keyword.is_empty() {
            return Err(ConnInfoError::EmptyKeyword { position: i + 1 });
        }
        if !keyword.chars().all(is_keyword_char) {
            return Err(ConnInfoError::InvalidKeyword {
                position: keyword_start + 1,
            });
        }
        i += 1;
        while i < n && is_space(c[i]) {
            i += 1;
        }
        let mut value = String::new();
        if i < n && c[i] == '\'' {
            let quote = i;
            i += 1;
            loop {
                match c.get(i) {
                    None => {
                        return Err(ConnInfoError::UnterminatedQuote {
                            position: quote + 1,
                        });
                    }
                    Some('\\') => {
                        if let Some(&next) = c.get(i + 1) {
                            value.push(next);
                        }
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
        } else {
            while i < n && !is_space(c[i]) {
                if c[i] == '\\' {
                    i += 1;
                    if i < n {
                        value.push(c[i]);
                        i += 1;
                    }
                } else {
                    value.push(c[i]);
                    i += 1;
                }
            }
        }
        info.set(keyword, value);
    }
    Ok(info)
}

/// URI parsing, as libpq's `conninfo_uri_parse_options`.
fn parse_uri(s: &str, prefix_len: usize) -> Result<ConnInfo, ConnInfoError> {
    let c: Vec<char> = s.chars().collect();
    let n = c.len();
    let mut info = ConnInfo::new();
    // The prefix is ASCII: its length in bytes is its length in characters.
    let mut p = prefix_len;

    // user[:password]@, if an "@" comes before any "/".
    let mut q = p;
    while q < n && c[q] != '@' && c[q] != '/' {
        q += 1;
    }
    if q < n && c[q] == '@' {
        let (user_end, password_start) = match c[p..q].iter().position(|&ch| ch == ':') {
            Some(colon) => (p + colon, Some(p + colon + 1)),
            None => (q, None),
        };
        if user_end > p {
            let user = percent_decode(&c[p..user_end], p, UriPart::User)?;
            info.set("user", user);
        }
        if let Some(start) = password_start.filter(|&start| start < q) {
            let password = percent_decode(&c[start..q], start, UriPart::Password)?;
            info.set("password", password);
        }
        p = q + 1;
    }

    // host[:port][,host[:port]...]
    let mut hosts = String::new();
    let mut ports = String::new();
    let mut terminator;
    loop {
        if p < n && c[p] == '[' {
            let open = p;
            p += 1;
            let start = p;
            while p < n && c[p] != ']' {
                p += 1;
            }
            if p == n {
                return Err(ConnInfoError::UnterminatedIpv6Host { position: open + 1 });
            }
            if p == start {
                return Err(ConnInfoError::EmptyIpv6Host { position: open + 1 });
            }
            hosts.push_str(&percent_decode(&c[start..p], start, UriPart::Host)?);
            p += 1;
            if p < n && !matches!(c[p], ':' | '/' | '?' | ',') {
                return Err(ConnInfoError::UnexpectedAfterIpv6Host { position: p + 1 });
            }
        } else {
            let start = p;
            while p < n && !matches!(c[p], ':' | '/' | '?' | ',') {
                p += 1;
            }
            hosts.push_str(&percent_decode(&c[start..p], start, UriPart::Host)?);
        }
        terminator = c.get(p).copied();
        if terminator == Some(':') {
            p += 1;
            let start = p;
            while p < n && !matches!(c[p], '/' | '?' | ',') {
                p += 1;
            }
            ports.push_str(&percent_decode(&c[start..p], start, UriPart::Port)?);
            terminator = c.get(p).copied();
        }
        if terminator != Some(',') {
            break;
        }
        p += 1;
        hosts.push(',');
        ports.push(',');
    }
    // Empty values are left unset so that PGHOST etc. still apply.
    if !hosts.is_empty() {
        info.set("host", hosts);
    }
    if !ports.is_empty() {
        info.set("port", ports);
    }

    let mut query_start = None;
    match terminator {
        Some('/') => {
            p += 1;
            let start = p;
            while p < n && c[p] != '?' {
                p += 1;
            }
            if p > start {
                let dbname = percent_decode(&c[start..p], start, UriPart::Dbname)?;
                info.set("dbname", dbname);
            }
            if p < n {
                query_start = Some(p + 1);
            }
        }
        Some('?') => query_start = Some(p + 1),
        _ => {}
    }

    if let Some(start) = query_start {
        parse_query(&c, start, &mut info)?;
    }
    Ok(info)
}

/// `keyword=value&...` after the `?` of a URI, from `c[start..]`.
fn parse_query(c: &[char], start: usize, info: &mut ConnInfo) -> Result<(), ConnInfoError> {
    let n = c.len();
    let mut p = start;
    while p < n {
        let param_start = p;
        let mut equals = None;
        while p < n && c[p] != '&' {
            if c[p] == '=' {
                if equals.is_some() {
                    return Err(ConnInfoError::ExtraQueryEquals {
                        position: param_start + 1,
                    });
                }
                equals = Some(p);
            }
            p += 1;
        }
        let Some(eq) = equals else {
            return Err(ConnInfoError::MissingQueryEquals {
                position: param_start + 1,
            });
        };
        let keyword = percent_decode(&c[param_start..eq], param_start, UriPart::QueryParameter)?;
        let value = percent_decode(&c[eq + 1..p], eq + 1, UriPart::QueryParameter)?;
        if keyword.is_empty() {
            return Err(ConnInfoError::EmptyKeyword { position: eq + 1 });
        }
        if !keyword.chars().all(is_keyword_char) {
            return Err(ConnInfoError::InvalidKeyword {
                position: param_start + 1,
            });
        }
        // libpq's special case for JDBC compatibility.
        if keyword == "ssl" && value == "true" {
            info.set("sslmode", "require");
        } else {
            info.set(keyword, value);
        }
        // Skip the "&"; a trailing "&" ends the loop.
        p += 1;
    }
    Ok(())
}

/// Decodes `%XX` sequences in `c`, which starts at index `offset` of the
/// whole string. `+` is not a space, as in libpq.
fn percent_decode(c: &[char], offset: usize, part: UriPart) -> Result<String, ConnInfoError> {
    if !c.contains(&'%') {
        return Ok(c.iter().collect());
    }
    let mut bytes = Vec::with_capacity(c.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '%' {
            let hex = |j: usize| c.get(j).and_then(|ch| ch.to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(ConnInfoError::InvalidPercentEncoding {
                    part,
                    position: offset + i + 1,
                });
            };
            let byte = (hi * 16 + lo) as u8;
            if byte == 0 {
                return Err(ConnInfoError::PercentEncodedNul {
                    part,
                    position: offset + i + 1,
                });
            }
            bytes.push(byte);
            i += 3;
        } else {
            let mut buf = [0; 4];
            bytes.extend_from_slice(c[i].encode_utf8(&mut buf).as_bytes());
            i += 1;
        }
    }
    String::from_utf8(bytes).map_err(|_| ConnInfoError::InvalidUtf8 { part })
}

/// Best effort: `s` with anything that looks like a password replaced by
/// `********`, for quoting a connection string that failed to parse.
///
/// Hides the `:password` of a URI's `user:password@` and the value of any
/// keyword or query parameter whose name contains `password` or `secret`.
/// It errs on the side of hiding too much.
pub fn redacted(s: &str) -> String {
    match uri_prefix(s) {
        Some(prefix) => {
            let rest = redact_values(&s[prefix.len()..], true);
            // From the first ":" to the last "@": that covers a password with
            // an unencoded "@" or "/" in it, at the cost of sometimes hiding
            // more than the password.
            let userinfo = match (rest.find(':'), rest.rfind('@')) {
                (Some(colon), Some(at)) if colon < at => {
                    format!("{}:{REDACTED}{}", &rest[..colon], &rest[at..])
                }
                _ => rest,
            };
            format!("{prefix}{userinfo}")
        }
        None => redact_values(s, false),
    }
}

fn is_secret_like(keyword: &str) -> bool {
    let keyword = keyword.to_ascii_lowercase();
    keyword.contains("password") || keyword.contains("secret")
}

/// Replaces the values of secret-looking keywords. In a URI query a value
/// ends at `&`; in a keyword/value string it is quoted or ends at a blank.
fn redact_values(s: &str, uri: bool) -> String {
    let c: Vec<char> = s.chars().collect();
    let n = c.len();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < n {
        if !(is_keyword_char(c[i]) && (i == 0 || !is_keyword_char(c[i - 1]))) {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < n && is_keyword_char(c[i]) {
            i += 1;
        }
        let keyword: String = c[start..i].iter().collect();
        out.push_str(&keyword);
        if !is_secret_like(&keyword) {
            continue;
        }
        let mut j = i;
        while !uri && j < n && is_space(c[j]) {
            j += 1;
        }
        if j == n || c[j] != '=' {
            continue;
        }
        j += 1;
        if uri {
            while j < n && c[j] != '&' {
                j += 1;
            }
        } else {
            while j < n && is_space(c[j]) {
                j += 1;
            }
            if j < n && c[j] == '\'' {
                j += 1;
                while j < n && c[j] != '\'' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                j += 1;
            } else {
                while j < n && !is_space(c[j]) {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
            }
        }
        out.push('=');
        out.push_str(REDACTED);
        i = j.min(n);
    }
    out
}
