//! Channel names: validation by the Bayeux grammar, kinds, and wildcard matching.
//!
//! Bayeux 1.0 §2.2: a channel name is `/` followed by one or more segments separated by
//! `/`, each segment made of ASCII letters, digits and the marks `- _ ! ~ ( ) $ @`.
//! A pattern ends in `*` (exactly one more segment) or `**` (one or more segments).
//! [`ChannelGrammar::Cometd`] also accepts the characters CometD's servers accept, such
//! as `.` (`/stock/AAPL.O`).

use std::fmt;
use std::sync::Arc;

/// Which part of the channel space a name belongs to; each kind is handled differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `/meta/**`: the protocol's own channels, never published to or subscribed by clients.
    Meta,
    /// `/service/**`: messages for the server's own listeners, never broadcast.
    Service,
    /// Everything else: published messages go to every matching subscriber.
    Broadcast,
}

/// The wildcard a pattern ends in, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wildcard {
    /// `/a/*`: matches `/a/b` but not `/a/b/c` nor `/a`.
    One,
    /// `/a/**`: matches `/a/b`, `/a/b/c` and deeper, but not `/a`.
    Deep,
}

/// Why a string is not a valid channel name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The name is empty or does not start with `/`.
    NotAbsolute,
    /// Two slashes in a row, or a trailing slash.
    EmptySegment,
    /// A character outside the Bayeux grammar.
    InvalidCharacter(char),
    /// `*` or `**` somewhere other than the whole last segment.
    MisplacedWildcard,
    /// Longer than the configured limit.
    TooLong(usize),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::NotAbsolute => f.write_str("channel must start with '/'"),
            ChannelError::EmptySegment => f.write_str("channel has an empty segment"),
            ChannelError::InvalidCharacter(c) => write!(f, "invalid character {c:?} in channel"),
            ChannelError::MisplacedWildcard => {
                f.write_str("wildcard '*' or '**' must be the whole last segment")
            }
            ChannelError::TooLong(max) => write!(f, "channel is longer than {max} bytes"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// A validated channel name or wildcard pattern.
///
/// Cheap to clone (the text is shared). Compare and hash by the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    name: Arc<str>,
    kind: ChannelKind,
    wildcard: Option<Wildcard>,
}

/// Which characters the segments of a channel name may hold.
///
/// Both grammars share the structure: a name starts with `/`, has no empty segment, and
/// `*` or `**` may only be the whole last segment (a wildcard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChannelGrammar {
    /// The Bayeux 1.0 grammar (§2.2): ASCII letters, digits and `- _ ! ~ ( ) $ @`. The
    /// default, and what Faye accepts.
    #[default]
    Strict,
    /// What CometD's servers accept (its `Bayeux.Validator.isValidChannelId`): the
    /// strict set and also space, `#`, `+`, `.`, `{` and `}`, so that applications that
    /// move from a CometD server keep their channel names (`/stock/AAPL.O`).
    Cometd,
}

impl ChannelGrammar {
    /// The name used by `bayeux serve --channel-grammar`: `strict` or `cometd`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelGrammar::Strict => "strict",
            ChannelGrammar::Cometd => "cometd",
        }
    }

    /// The grammar named `name` (`strict` or `cometd`).
    pub fn from_name(name: &str) -> Option<Self> {
        [ChannelGrammar::Strict, ChannelGrammar::Cometd]
            .into_iter()
            .find(|g| g.as_str() == name)
    }

    /// Whether `c` may appear in a segment.
    fn allows(self, c: char) -> bool {
        let strict =
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '!' | '~' | '(' | ')' | '$' | '@');
        match self {
            ChannelGrammar::Strict => strict,
            ChannelGrammar::Cometd => strict || matches!(c, ' ' | '#' | '+' | '.' | '{' | '}'),
        }
    }
}

impl ChannelName {
    /// Validates `name` against the Bayeux grammar (wildcards allowed as the last segment).
    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        Self::parse_with(name, ChannelGrammar::Strict)
    }

    /// Validates `name` against `grammar` (wildcards allowed as the last segment).
    pub fn parse_with(name: &str, grammar: ChannelGrammar) -> Result<Self, ChannelError> {
        let rest = name.strip_prefix('/').ok_or(ChannelError::NotAbsolute)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let last = segments.len() - 1;
        let mut wildcard = None;
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(ChannelError::EmptySegment);
            }
            match *segment {
                "*" | "**" if i == last && i > 0 => {
                    wildcard = Some(if *segment == "*" {
                        Wildcard::One
                    } else {
                        Wildcard::Deep
                    });
                }
                "*" | "**" if i == last => {
                    // `/*` and `/**` are legal patterns over the whole space.
                    wildcard = Some(if *segment == "*" {
                        Wildcard::One
                    } else {
                        Wildcard::Deep
                    });
                }
                s => {
                    if let Some(c) = s.chars().find(|c| !grammar.allows(*c)) {
                        return Err(if c == '*' {
                            ChannelError::MisplacedWildcard
                        } else {
                            ChannelError::InvalidCharacter(c)
                        });
                    }
                }
            }
        }
        let kind = match segments[0] {
            "meta" if segments.len() > 1 => ChannelKind::Meta,
            "service" if segments.len() > 1 => ChannelKind::Service,
            _ => ChannelKind::Broadcast,
        };
        Ok(ChannelName {
            name: Arc::from(name),
            kind,
            wildcard,
        })
    }

    /// Like [`ChannelName::parse`], but also refuses names longer than `max_len` bytes.
    pub fn parse_bounded(name: &str, max_len: usize) -> Result<Self, ChannelError> {
        Self::parse_bounded_with(name, max_len, ChannelGrammar::Strict)
    }

    /// Like [`ChannelName::parse_with`], but also refuses names longer than `max_len`
    /// bytes.
    pub fn parse_bounded_with(
        name: &str,
        max_len: usize,
        grammar: ChannelGrammar,
    ) -> Result<Self, ChannelError> {
        if name.len() > max_len {
            return Err(ChannelError::TooLong(max_len));
        }
        Self::parse_with(name, grammar)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Meta, service or broadcast.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// The wildcard this pattern ends in, or `None` for a plain channel name.
    pub fn wildcard(&self) -> Option<Wildcard> {
        self.wildcard
    }

    /// True for `/meta/**` names.
    pub fn is_meta(&self) -> bool {
        self.kind == ChannelKind::Meta
    }

    /// True for `/service/**` names.
    pub fn is_service(&self) -> bool {
        self.kind == ChannelKind::Service
    }

    /// The segments after the leading `/` (the wildcard, if any, is the last one).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.name[1..].split('/')
    }

    /// The segments without the trailing wildcard: the prefix a pattern matches under.
    pub fn prefix_segments(&self) -> impl Iterator<Item = &str> {
        let n = self.segments().count() - usize::from(self.wildcard.is_some());
        self.segments().take(n)
    }

    /// Whether this name (a pattern or a plain name) matches the plain channel `channel`.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        if channel.wildcard.is_some() {
            return self == channel;
        }
        match self.wildcard {
            None => self.name == channel.name,
            Some(w) => {
                let prefix: Vec<&str> = self.prefix_segments().collect();
                let segs: Vec<&str> = channel.segments().collect();
                if segs.len() <= prefix.len() || segs[..prefix.len()] != prefix[..] {
                    return false;
                }
                match w {
                    Wildcard::One => segs.len() == prefix.len() + 1,
                    Wildcard::Deep => true,
                }
            }
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({:?})", &*self.name)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn valid_names_and_kinds() {
        assert_eq!(c("/foo").kind(), ChannelKind::Broadcast);
        assert_eq!(c("/foo/bar-baz_1!~()$@").kind(), ChannelKind::Broadcast);
        assert_eq!(c("/meta/connect").kind(), ChannelKind::Meta);
        assert_eq!(c("/service/echo").kind(), ChannelKind::Service);
        assert_eq!(c("/meta/**").kind(), ChannelKind::Meta);
        assert_eq!(c("/metadata").kind(), ChannelKind::Broadcast);
        assert_eq!(c("/meta").kind(), ChannelKind::Broadcast);
        assert_eq!(c("/a/*").wildcard(), Some(Wildcard::One));
        assert_eq!(c("/a/**").wildcard(), Some(Wildcard::Deep));
        assert_eq!(c("/**").wildcard(), Some(Wildcard::Deep));
        assert_eq!(c("/a/b").wildcard(), None);
    }

    #[test]
    fn invalid_names() {
        use ChannelError::*;
        assert_eq!(ChannelName::parse(""), Err(NotAbsolute));
        assert_eq!(ChannelName::parse("foo"), Err(NotAbsolute));
        assert_eq!(ChannelName::parse("/"), Err(EmptySegment));
        assert_eq!(ChannelName::parse("/a//b"), Err(EmptySegment));
        assert_eq!(ChannelName::parse("/a/"), Err(EmptySegment));
        assert_eq!(ChannelName::parse("/a b"), Err(InvalidCharacter(' ')));
        assert_eq!(ChannelName::parse("/a.b"), Err(InvalidCharacter('.')));
        assert_eq!(ChannelName::parse("/é"), Err(InvalidCharacter('é')));
        assert_eq!(ChannelName::parse("/a/*/b"), Err(MisplacedWildcard));
        assert_eq!(ChannelName::parse("/a/b*"), Err(MisplacedWildcard));
        assert_eq!(ChannelName::parse("/a/***"), Err(MisplacedWildcard));
        assert_eq!(ChannelName::parse_bounded("/abcdef", 4), Err(TooLong(4)));
    }

    #[test]
    fn the_cometd_grammar_accepts_what_cometd_accepts() {
        use ChannelError::*;
        let cometd = |s: &str| ChannelName::parse_with(s, ChannelGrammar::Cometd);
        for name in [
            "/stock/AAPL.O",
            "/a/b c",
            "/x/#1+2",
            "/chat/{room}",
            "/a/b-_!~()$@",
        ] {
            assert_eq!(cometd(name).unwrap().as_str(), name);
            assert_eq!(
                ChannelName::parse(name).is_ok(),
                name == "/a/b-_!~()$@",
                "{name} in the strict grammar"
            );
        }
        assert_eq!(cometd("/stock/*").unwrap().wildcard(), Some(Wildcard::One));
        assert!(
            cometd("/stock/AAPL.O")
                .unwrap()
                .matches(&cometd("/stock/AAPL.O").unwrap())
        );
        assert!(
            cometd("/stock/**")
                .unwrap()
                .matches(&cometd("/stock/AAPL.O").unwrap())
        );
        // The structure rules hold in both grammars.
        assert_eq!(cometd("stock"), Err(NotAbsolute));
        assert_eq!(cometd("/a//b"), Err(EmptySegment));
        assert_eq!(cometd("/a/b*"), Err(MisplacedWildcard));
        assert_eq!(cometd("/a/é"), Err(InvalidCharacter('é')));
        assert_eq!(cometd("/a/b?"), Err(InvalidCharacter('?')));
        assert_eq!(cometd("/a/b%"), Err(InvalidCharacter('%')));
        assert_eq!(
            ChannelName::parse_bounded_with("/a.b.c", 4, ChannelGrammar::Cometd),
            Err(TooLong(4))
        );
        assert_eq!(
            ChannelGrammar::from_name("cometd"),
            Some(ChannelGrammar::Cometd)
        );
        assert_eq!(
            ChannelGrammar::from_name("strict"),
            Some(ChannelGrammar::Strict)
        );
        assert_eq!(ChannelGrammar::from_name("loose"), None);
        assert_eq!(ChannelGrammar::default(), ChannelGrammar::Strict);
    }

    #[test]
    fn matching() {
        assert!(c("/a/b").matches(&c("/a/b")));
        assert!(!c("/a/b").matches(&c("/a/c")));
        assert!(c("/a/*").matches(&c("/a/b")));
        assert!(!c("/a/*").matches(&c("/a/b/c")));
        assert!(!c("/a/*").matches(&c("/a")));
        assert!(c("/a/**").matches(&c("/a/b")));
        assert!(c("/a/**").matches(&c("/a/b/c/d")));
        assert!(!c("/a/**").matches(&c("/a")));
        assert!(!c("/a/**").matches(&c("/ab/c")));
        assert!(c("/*").matches(&c("/x")));
        assert!(!c("/*").matches(&c("/x/y")));
        assert!(c("/**").matches(&c("/x/y")));
        // A pattern never matches another pattern but itself.
        assert!(!c("/a/**").matches(&c("/a/*")));
    }
}
