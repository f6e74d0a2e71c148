//! One-line error messages that keep their cause: what was tried (the URL, the file)
//! and why it failed.

use std::error::Error;

/// `error` and each of its causes on one line, `: `-separated. A cause that the text
/// before it already ends with is not repeated, and hyper's `client error (Connect)`
/// wrappers, which say nothing their cause does not, are left out.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        next = e.source();
        let wrapper = text.starts_with("client error (") && next.is_some();
        if wrapper || parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    one_line(&parts.join(": "))
}

/// `text` with its runs of whitespace (new lines included) made one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a response body that was not what we expected holds, in a few words: empty, an
/// HTML page (with its title), or its start on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".to_string();
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<body")
    {
        let title = lower
            .find("<title>")
            .map(|start| start + "<title>".len())
            .and_then(|start| Some((start, start + lower[start..].find("</title>")?)))
            .map(|(start, end)| one_line(&text[start..end]))
            .filter(|t| !t.is_empty());
        return match title {
            Some(title) => format!("an HTML page titled {title:?}"),
            None => "an HTML page".to_string(),
        };
    }
    let line = one_line(text);
    match line.char_indices().nth(100) {
        Some((cut, _)) => format!("{:?}...", &line[..cut]),
        None => format!("{line:?}"),
    }
}

/// A client error for `url`, naming the URL when the error does not already, with a
/// hint when TLS met a server that does not speak it.
pub fn client(url: &str, error: &bayeux::client::Error) -> String {
    let text = error.to_string();
    let text = if text.contains(url) {
        text
    } else {
        format!("{url}: {text}")
    };
    if is_tls_mismatch(error) {
        format!("{text} (the server does not speak TLS there: try http://)")
    } else {
        text
    }
}

/// Whether `error` comes from rustls meeting something that is not TLS (a plain HTTP
/// server at an `https://` URL): retrying will not mend it.
pub fn is_tls_mismatch(error: &(dyn Error + 'static)) -> bool {
    use bayeux::client::tls::rustls;
    /// `e` itself, or the errors that the `io::Error`s `e` is wrap: an `io::Error`
    /// shows its inner error but does not give it as its source.
    fn invalid_message(e: &(dyn Error + 'static)) -> bool {
        if let Some(rustls::Error::InvalidMessage(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        inner.is_some_and(|inner| invalid_message(inner))
    }
    let mut next = Some(error);
    while let Some(e) = next {
        if invalid_message(e) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(b"  \n"), "an empty body");
        assert_eq!(
            excerpt(b"<!DOCTYPE html>\n<html><head><title>404\n Not Found</title></head><body>...</body></html>"),
            "an HTML page titled \"404 Not Found\""
        );
        assert_eq!(excerpt(b"<html><body>x</body></html>"), "an HTML page");
        assert_eq!(excerpt(b"not\nfound"), "\"not found\"");
        let long = "x".repeat(300);
        assert_eq!(
            excerpt(long.as_bytes()),
            format!("{:?}...", "x".repeat(100))
        );
    }

    #[test]
    fn the_chain_keeps_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug)]
        struct Wrap(std::io::Error, &'static str);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.1)
            }
        }
        impl Error for Wrap {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(chain(&Wrap(io, "client error (Connect)")), "refused");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            chain(&Wrap(io, "tcp connect error")),
            "tcp connect error: refused"
        );
    }
}
