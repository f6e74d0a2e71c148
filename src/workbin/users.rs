//! Who is who in the demo: a users file, HTTP Basic credentials, and the
//! [`SecurityPolicy`] that binds each Bayeux session to its agent.

use std::collections::HashMap;
use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use crate::protocol::{ChannelName, Message};
use crate::server::{Decision, HandshakeDecision, HandshakeRequest, SecurityPolicy, SessionInfo};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives notifications for their own workbins.
    Agent,
    /// May also assign interactions to any agent's workbin.
    Supervisor,
}

enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

struct UserEntry {
    secret: Secret,
    role: Role,
}

/// A users file that is not in the expected form.
#[derive(Debug)]
pub struct UsersFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for UsersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "users file line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for UsersFileError {}

/// The users the server knows, read from a file of `name:secret:role` lines.
///
/// `secret` is the plain password, or `SHA256:` followed by the hex SHA-256 of the
/// password (`printf %s 'password' | sha256sum`). `role` is `agent` or `supervisor`.
/// Blank lines and lines starting with `#` are ignored.
pub struct UserDirectory {
    users: HashMap<String, UserEntry>,
}

/// Lists the user names only: secrets never reach a log.
impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("UserDirectory")
            .field("users", &names)
            .finish()
    }
}

impl UserDirectory {
    /// Parses the text of a users file.
    pub fn parse(text: &str) -> Result<Self, UsersFileError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: &str| UsersFileError {
                line: i + 1,
                message: message.to_string(),
            };
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| err("expected name:secret:role"))?;
            let (secret, role) = rest
                .rsplit_once(':')
                .ok_or_else(|| err("expected name:secret:role"))?;
            if name.is_empty() {
                return Err(err("empty user name"));
            }
            let role = match role {
                "agent" => Role::Agent,
                "supervisor" => Role::Supervisor,
                _ => return Err(err("role must be agent or supervisor")),
            };
            let secret = match secret.strip_prefix("SHA256:") {
                Some(hex) => Secret::Sha256(
                    parse_hex(hex).ok_or_else(|| err("SHA256: needs 64 hex digits"))?,
                ),
                None => Secret::Plain(secret.to_string()),
            };
            users.insert(name.to_string(), UserEntry { secret, role });
        }
        Ok(UserDirectory { users })
    }

    /// The user's role when `password` is right; `None` otherwise.
    pub fn verify(&self, user: &str, password: &str) -> Option<Role> {
        let entry = self.users.get(user)?;
        let ok = match &entry.secret {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Secret::Sha256(h) => constant_time_eq(h, &Sha256::digest(password.as_bytes())),
        };
        ok.then_some(entry.role)
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Compares without returning early, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `user` and `password` of an `Authorization: Basic` header, if there is a valid one.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(crate::base64::decode(token)?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

/// Who may use the demo server, and which agent each Bayeux session belongs to.
#[derive(Debug)]
pub struct Access {
    directory: Option<UserDirectory>,
    trust_ext_user_id: bool,
}

/// The result of checking a caller of the workbin endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Caller {
    /// Allowed (a supervisor, or anyone in demo mode).
    Allowed,
    /// No valid credentials: 401.
    Unauthenticated,
    /// Valid credentials, but not a supervisor: 403 (the user is named).
    NotSupervisor(String),
}

impl Access {
    /// Demo mode: any Basic user name is accepted with any password, and anyone may call
    /// the workbin endpoint.
    pub fn demo() -> Self {
        Access {
            directory: None,
            trust_ext_user_id: false,
        }
    }

    /// Checked mode: credentials must match `directory`; only supervisors may assign.
    pub fn checked(directory: UserDirectory) -> Self {
        Access {
            directory: Some(directory),
            trust_ext_user_id: false,
        }
    }

    /// Also accepts `ext.userId` in the handshake as the session's user, without a
    /// password (for a server behind a gateway that authenticated the user already).
    pub fn trusting_ext_user_id(mut self) -> Self {
        self.trust_ext_user_id = true;
        self
    }

    /// True in demo mode.
    pub fn is_demo(&self) -> bool {
        self.directory.is_none()
    }

    /// Checks a caller of the workbin endpoint.
    pub fn workbin_caller(&self, headers: &HeaderMap) -> Caller {
        let Some(directory) = &self.directory else {
            return Caller::Allowed;
        };
        match basic_credentials(headers) {
            Some((user, password)) => match directory.verify(&user, &password) {
                Some(Role::Supervisor) => Caller::Allowed,
                Some(Role::Agent) => Caller::NotSupervisor(user),
                None => Caller::Unauthenticated,
            },
            None => Caller::Unauthenticated,
        }
    }
}

impl SecurityPolicy for Access {
    fn handshake(&self, request: &HandshakeRequest<'_>) -> HandshakeDecision {
        if let Some((user, password)) = basic_credentials(request.headers) {
            return match &self.directory {
                None => HandshakeDecision::Accept { user: Some(user) },
                Some(d) if d.verify(&user, &password).is_some() => {
                    HandshakeDecision::Accept { user: Some(user) }
                }
                Some(_) => HandshakeDecision::Deny("invalid credentials".into()),
            };
        }
        if self.trust_ext_user_id
            && let Some(user) = request
                .message
                .ext
                .as_ref()
                .and_then(|e| e.get("userId"))
                .and_then(|v| v.as_str())
                .filter(|u| !u.is_empty())
        {
            return HandshakeDecision::Accept {
                user: Some(user.to_string()),
            };
        }
        if self.directory.is_some() {
            HandshakeDecision::Deny("credentials required".into())
        } else {
            // Demo mode: an anonymous session may use other channels, but has no
            // /v2/me notifications since it is nobody.
            HandshakeDecision::Accept { user: None }
        }
    }

    fn publish(
        &self,
        session: Option<&SessionInfo>,
        channel: &ChannelName,
        _: &Message,
    ) -> Decision {
        // Only the server speaks on /v2/**: a client publishing there could forge
        // another agent's notifications.
        if session.is_some() && channel.segments().next() == Some("v2") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# demo users\n\nsup:SHA256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8:supervisor\nagent1:pw1:agent\nagent2:a:b:c:agent\n";

    #[test]
    fn users_file_plain_and_hashed_secrets() {
        let d = UserDirectory::parse(FILE).unwrap();
        assert_eq!(d.verify("sup", "password"), Some(Role::Supervisor));
        assert_eq!(d.verify("sup", "Password"), None);
        assert_eq!(d.verify("agent1", "pw1"), Some(Role::Agent));
        assert_eq!(d.verify("agent2", "a:b:c"), Some(Role::Agent));
        assert_eq!(d.verify("nobody", "pw1"), None);
    }

    #[test]
    fn users_file_errors_name_the_line() {
        let e = UserDirectory::parse("ok:pw:agent\nbroken").err().unwrap();
        assert_eq!(e.line, 2);
        assert!(UserDirectory::parse("x:pw:admin").is_err());
        assert!(UserDirectory::parse("x:SHA256:abcd:agent").is_err());
        assert!(UserDirectory::parse(":pw:agent").is_err());
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_read_strictly() {
        let token = crate::base64::encode(b"agent1:pw:with:colons");
        assert_eq!(
            basic_credentials(&headers(&format!("Basic {token}"))),
            Some(("agent1".into(), "pw:with:colons".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer abc")), None);
        assert_eq!(basic_credentials(&headers("Basic !!!")), None);
        assert_eq!(
            basic_credentials(&headers(&format!(
                "Basic {}",
                crate::base64::encode(b":pw")
            ))),
            None
        );
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn workbin_callers() {
        let access = Access::checked(UserDirectory::parse(FILE).unwrap());
        let basic = |u: &str, p: &str| {
            headers(&format!(
                "Basic {}",
                crate::base64::encode(format!("{u}:{p}").as_bytes())
            ))
        };
        assert_eq!(
            access.workbin_caller(&basic("sup", "password")),
            Caller::Allowed
        );
        assert_eq!(
            access.workbin_caller(&basic("agent1", "pw1")),
            Caller::NotSupervisor("agent1".into())
        );
        assert_eq!(
            access.workbin_caller(&basic("sup", "wrong")),
            Caller::Unauthenticated
        );
        assert_eq!(
            access.workbin_caller(&HeaderMap::new()),
            Caller::Unauthenticated
        );
        assert_eq!(
            Access::demo().workbin_caller(&HeaderMap::new()),
            Caller::Allowed
        );
    }
}
