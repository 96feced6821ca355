//! The XML S3 reads: the two request bodies clients send (CompleteMultipartUpload, Delete),
//! and the namespace of S3 responses (written with `http::xml`).

use super::error::S3Error;
use quick_xml::events::Event;
use quick_xml::Reader;

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The `(part number, etag)` list of a CompleteMultipartUpload body.
pub fn parse_complete(body: &[u8]) -> Result<Vec<(u32, String)>, S3Error> {
    let mut parts = Vec::new();
    let (mut number, mut etag) = (None, None);
    walk(body, |ev| {
        match ev {
            Walk::Text([.., "Part", "PartNumber"], text) => {
                number = Some(
                    text.trim()
                        .parse::<u32>()
                        .map_err(|_| S3Error::malformed_xml("bad PartNumber"))?,
                )
            }
            Walk::Text([.., "Part", "ETag"], text) => {
                etag = Some(text.trim().trim_matches('"').to_string())
            }
            Walk::End([.., "Part"]) => match (number.take(), etag.take()) {
                (Some(n), Some(e)) => parts.push((n, e)),
                _ => return Err(S3Error::malformed_xml("Part needs PartNumber and ETag")),
            },
            _ => {}
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Err(S3Error::malformed_xml("no parts"));
    }
    Ok(parts)
}

/// The keys and quiet flag of a DeleteObjects body.
pub fn parse_delete(body: &[u8]) -> Result<(Vec<String>, bool), S3Error> {
    let mut keys = Vec::new();
    let mut quiet = false;
    walk(body, |ev| {
        match ev {
            Walk::Text([.., "Object", "Key"], text) => keys.push(text.to_string()),
            Walk::Text([.., "Quiet"], text) => quiet = text.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
        Ok(())
    })?;
    if keys.len() > 1000 {
        return Err(S3Error::malformed_xml("more than 1000 keys"));
    }
    Ok((keys, quiet))
}

/// One step of a walk over an XML document: text inside the element path, or the end of
/// the element path. Namespaces are ignored.
enum Walk<'a> {
    Text(&'a [&'a str], &'a str),
    End(&'a [&'a str]),
}

fn walk(body: &[u8], mut f: impl FnMut(Walk<'_>) -> Result<(), S3Error>) -> Result<(), S3Error> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| S3Error::malformed_xml(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                if path.len() > 16 {
                    return Err(S3Error::malformed_xml("nested too deep"));
                }
            }
            Event::End(_) => {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                f(Walk::End(&p))?;
                path.pop();
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| S3Error::malformed_xml(e.to_string()))?;
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                f(Walk::Text(&p, &text))?;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_body_round_trips_parts() {
        let body = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"aa"</ETag><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber><ETag>bb</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete(body).unwrap(),
            vec![(1, "aa".into()), (2, "bb".into())]
        );
        assert!(parse_complete(b"<CompleteMultipartUpload></CompleteMultipartUpload>").is_err());
        assert!(parse_complete(b"<a><Part><PartNumber>x</PartNumber></Part></a>").is_err());
    }

    #[test]
    fn delete_body_gives_keys_and_quiet() {
        let body = b"<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>";
        assert_eq!(
            parse_delete(body).unwrap(),
            (vec!["a&b".to_string(), "c".to_string()], true)
        );
        assert!(
            parse_delete(b"<Delete><Object>").is_err()
                || parse_delete(b"<Delete><Object>").unwrap().0.is_empty()
        );
    }
}
