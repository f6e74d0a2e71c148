//! How Bayeux destinations map onto NATS subjects, and back. Pure: no I/O.
//!
//! Under a prefix (default `bayeux`), a subject says who a message is for, then which
//! channel it is on, one NATS token per channel segment:
//!
//! | destination                  | subject                                   |
//! |------------------------------|-------------------------------------------|
//! | subscribers of `/a/b`        | `bayeux.c.a.b`                            |
//! | a pattern `/a/*`, `/a/**`    | `bayeux.c.a.*`, `bayeux.c.a.>`            |
//! | user `ann`, channel `/v2/me` | `bayeux.u.ann.v2.me`                      |
//! | session `K7…` on node `K7`   | `bayeux.s.K7.<rest of the id>.<channel>`  |
//!
//! Bayeux's `*` and `**` become NATS's `*` and `>`, which have the same meaning (one
//! token; one or more tokens). A token's characters that NATS gives a meaning to or
//! forbids (`.`, `*`, `>`, whitespace, control characters), `%` itself and every
//! non-ASCII byte are written `%XX` (upper-case hex of each UTF-8 byte), so the mapping is
//! reversible and two different segments never share a token. An empty token is `%`.

use crate::protocol::{ChannelGrammar, ChannelName, Wildcard};

use super::Destination;

/// Length of a node's name at the start of the `clientId`s it makes: a per-session
/// message is published to the subject of the node that holds the session.
pub(crate) const NODE_ID_LEN: usize = 8;

/// Appends `token`, escaped, to `out`.
pub(crate) fn escape_into(out: &mut String, token: &str) {
    if token.is_empty() {
        out.push('%');
        return;
    }
    for b in token.bytes() {
        let plain = b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%');
        if plain {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

/// The token `escape_into` wrote, decoded; `None` if it is not one it could write.
pub(crate) fn unescape(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Appends a channel's (or pattern's) segments as tokens, wildcards mapped to NATS's.
fn channel_into(out: &mut String, channel: &ChannelName) {
    let wildcard = channel.wildcard();
    let segments: Vec<&str> = channel.segments().collect();
    let literal = if wildcard.is_some() {
        &segments[..segments.len().saturating_sub(1)]
    } else {
        &segments[..]
    };
    for segment in literal {
        out.push('.');
        escape_into(out, segment);
    }
    match wildcard {
        Some(Wildcard::One) => out.push_str(".*"),
        Some(Wildcard::Deep) => out.push_str(".>"),
        None => {}
    }
}

/// The subject to publish a message for `destination` on `channel` to.
pub(crate) fn publish_subject(
    prefix: &str,
    destination: &Destination,
    channel: &ChannelName,
) -> String {
    let mut out = String::with_capacity(prefix.len() + channel.as_str().len() + 48);
    out.push_str(prefix);
    match destination {
        Destination::Subscribers => out.push_str(".c"),
        Destination::User(user) => {
            out.push_str(".u.");
            escape_into(&mut out, user);
        }
        Destination::Session(client_id) => {
            out.push_str(".s.");
            let (node, rest) = split_client_id(client_id);
            escape_into(&mut out, node);
            out.push('.');
            escape_into(&mut out, rest);
        }
    }
    channel_into(&mut out, channel);
    out
}

/// A node's name and the rest of a `clientId` it made (the whole id as the rest when it
/// is too short to carry one: such a message reaches no node).
fn split_client_id(client_id: &str) -> (&str, &str) {
    match client_id.get(..NODE_ID_LEN) {
        Some(node) if client_id.len() > NODE_ID_LEN => (node, &client_id[NODE_ID_LEN..]),
        _ => ("", client_id),
    }
}

/// The subject a node subscribes to for broadcasts matching `pattern`.
pub(crate) fn pattern_subject(prefix: &str, pattern: &ChannelName) -> String {
    let mut out = String::with_capacity(prefix.len() + pattern.as_str().len() + 4);
    out.push_str(prefix);
    out.push_str(".c");
    channel_into(&mut out, pattern);
    out
}

/// The subject filter of `user`'s per-user messages on the channels `pattern` matches.
pub(crate) fn user_pattern_subject(prefix: &str, user: &str, pattern: &ChannelName) -> String {
    let mut out = String::with_capacity(prefix.len() + user.len() + pattern.as_str().len() + 8);
    out.push_str(prefix);
    out.push_str(".u.");
    escape_into(&mut out, user);
    channel_into(&mut out, pattern);
    out
}

/// The subject a node subscribes to for `user`'s per-user messages, on any channel.
pub(crate) fn user_subject(prefix: &str, user: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + user.len() + 8);
    out.push_str(prefix);
    out.push_str(".u.");
    escape_into(&mut out, user);
    out.push_str(".>");
    out
}

/// The subject a node subscribes to for messages to any of its sessions.
pub(crate) fn node_subject(prefix: &str, node: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + node.len() + 8);
    out.push_str(prefix);
    out.push_str(".s.");
    escape_into(&mut out, node);
    out.push_str(".>");
    out
}

/// Reads a received subject back into a destination and a plain channel. `None` for a
/// subject under another prefix, of an unknown kind, or naming no valid channel (a
/// foreign publisher's mistake: the message reaches nobody).
pub(crate) fn parse_subject(prefix: &str, subject: &str) -> Option<(Destination, ChannelName)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let destination = match tokens.next()? {
        "c" => Destination::Subscribers,
        "u" => Destination::User(unescape(tokens.next()?)?),
        "s" => {
            let node = unescape(tokens.next()?)?;
            let rest = unescape(tokens.next()?)?;
            Destination::Session(node + &rest)
        }
        _ => return None,
    };
    let mut channel = String::with_capacity(subject.len());
    for token in tokens {
        if token == "*" || token == ">" {
            return None;
        }
        channel.push('/');
        channel.push_str(&unescape(token)?);
    }
    // Lenient: a channel any node accepted must come back whatever this node's grammar.
    let channel = ChannelName::parse_with(&channel, ChannelGrammar::Cometd).ok()?;
    if channel.wildcard().is_some() || channel.is_meta() || channel.is_service() {
        return None;
    }
    Some((destination, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str) -> ChannelName {
        ChannelName::parse_with(name, ChannelGrammar::Cometd).unwrap()
    }

    #[test]
    fn channels_and_wildcards_map_onto_tokens() {
        assert_eq!(
            publish_subject("bayeux", &Destination::Subscribers, &c("/a/b")),
            "bayeux.c.a.b"
        );
        assert_eq!(pattern_subject("bayeux", &c("/a/*")), "bayeux.c.a.*");
        assert_eq!(pattern_subject("bayeux", &c("/a/**")), "bayeux.c.a.>");
        assert_eq!(pattern_subject("x", &c("/**")), "x.c.>");
        assert_eq!(user_subject("bayeux", "ann"), "bayeux.u.ann.>");
        assert_eq!(
            user_pattern_subject("bayeux.r", "ann", &c("/v2/me/*")),
            "bayeux.r.u.ann.v2.me.*"
        );
        assert_eq!(node_subject("bayeux", "K7abcdef"), "bayeux.s.K7abcdef.>");
    }

    #[test]
    fn characters_nats_reserves_are_escaped_reversibly() {
        let channel = c("/stock/AAPL.O");
        let subject = publish_subject("bayeux", &Destination::Subscribers, &channel);
        assert_eq!(subject, "bayeux.c.stock.AAPL%2EO");
        let (destination, back) = parse_subject("bayeux", &subject).unwrap();
        assert_eq!(destination, Destination::Subscribers);
        assert_eq!(back, channel);

        let mut out = String::new();
        escape_into(&mut out, "a b*c>d%e\té");
        assert_eq!(out, "a%20b%2Ac%3Ed%25e%09%C3%A9");
        assert!(!out.contains(['.', '*', '>', ' ', '\t']));
        assert_eq!(unescape(&out).unwrap(), "a b*c>d%e\té");
        let mut empty = String::new();
        escape_into(&mut empty, "");
        assert_eq!(unescape(&empty).unwrap(), "");
    }

    #[test]
    fn users_and_sessions_round_trip() {
        let user = Destination::User("ann.smith@example.com".into());
        let subject = publish_subject("p", &user, &c("/v2/me/workbins"));
        assert_eq!(subject, "p.u.ann%2Esmith@example%2Ecom.v2.me.workbins");
        assert!(
            subject.starts_with(user_subject("p", "ann.smith@example.com").trim_end_matches('>'))
        );
        assert_eq!(
            parse_subject("p", &subject).unwrap(),
            (user, c("/v2/me/workbins"))
        );

        let id = "K7abcdef0123456789";
        let session = Destination::Session(id.into());
        let subject = publish_subject("p", &session, &c("/x"));
        assert_eq!(subject, "p.s.K7abcdef.0123456789.x");
        assert!(subject.starts_with(node_subject("p", "K7abcdef").trim_end_matches('>')));
        assert_eq!(parse_subject("p", &subject).unwrap(), (session, c("/x")));
    }

    #[test]
    fn foreign_or_broken_subjects_name_nobody() {
        assert!(parse_subject("bayeux", "other.c.a").is_none());
        assert!(parse_subject("bayeux", "bayeuxx.c.a").is_none());
        assert!(parse_subject("bayeux", "bayeux.q.a").is_none());
        assert!(parse_subject("bayeux", "bayeux.c").is_none());
        assert!(parse_subject("bayeux", "bayeux.c.a%2").is_none());
        assert!(parse_subject("bayeux", "bayeux.c.a%FF").is_none());
        assert!(parse_subject("bayeux", "bayeux.c.meta.handshake").is_none());
        assert!(parse_subject("bayeux", "bayeux.c.service.x").is_none());
        assert!(parse_subject("bayeux", "bayeux.c.a.*").is_none());
        assert!(parse_subject("bayeux", "bayeux.u").is_none());
    }
}
