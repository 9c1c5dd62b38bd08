//! Just enough XML for S3's responses: the text of named elements, in order.
//!
//! S3 answers with flat, namespace-free documents (`ListBucketResult`,
//! `Error`, `InitiateMultipartUploadResult`, ...) whose values are text. This
//! reads those without a general XML parser: elements are found by name,
//! entities are decoded, and anything it cannot read is an error, never a
//! guess.

/// The inner text of every `<name>...</name>` in `doc`, in order (not nested
/// in each other: S3 does not nest elements of the same name).
pub fn all<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        match after.find(&close) {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + close.len()..];
            }
            None => break,
        }
    }
    out
}

/// The decoded text of the first `<name>` element, if any.
pub fn first(doc: &str, name: &str) -> Option<String> {
    all(doc, name).first().map(|s| unescape(s))
}

/// Decode the five predefined entities and numeric character references.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escape text for a request body.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>wal/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
<Contents><Key>wal/a&amp;b</Key><LastModified>2026-11-30T10:00:00.000Z</LastModified><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>wal/c</Key><LastModified>2026-11-30T10:00:01.000Z</LastModified><Size>0</Size><StorageClass>GLACIER</StorageClass></Contents>
<NextContinuationToken>tok/en==</NextContinuationToken></ListBucketResult>"#;

    #[test]
    fn reads_a_listing() {
        let contents = all(LIST, "Contents");
        assert_eq!(contents.len(), 2);
        assert_eq!(first(contents[0], "Key").unwrap(), "wal/a&b");
        assert_eq!(first(contents[1], "StorageClass").unwrap(), "GLACIER");
        assert_eq!(first(LIST, "IsTruncated").unwrap(), "true");
        assert_eq!(first(LIST, "NextContinuationToken").unwrap(), "tok/en==");
        assert_eq!(first(LIST, "Missing"), None);
    }

    #[test]
    fn entities_round_trip() {
        assert_eq!(
            unescape("a&lt;b&gt;&quot;c&apos;&#65;&#x42;&amp;"),
            "a<b>\"c'AB&"
        );
        assert_eq!(unescape("bad & entity &zz; end"), "bad & entity &zz; end");
        let s = "<k & 'v'>\"";
        assert_eq!(unescape(&escape(s)), s);
    }
}
