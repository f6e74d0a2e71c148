//! Who is who in the demo: a users file, HTTP Basic credentials, and the
//! [`SecurityPolicy`] that binds each Bayeux session to its agent.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::checks::{CheckLimits, CheckStats, Checks, Skipped};
use crate::protocol::{ChannelName, Message};
use crate::server::{
    ClientKey, Decision, HandshakeDecision, HandshakeRequest, PolicyFuture, SecurityPolicy,
    SessionInfo,
};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives notifications for their own workbins.
    Agent,
    /// May also assign interactions to any agent's workbin.
    Supervisor,
}

impl Role {
    /// The role's name in the users file: `agent` or `supervisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
        }
    }

    /// The role named `name` (`agent` or `supervisor`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Role::Agent, Role::Supervisor]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// A user's secret as the server keeps it.
enum Secret {
    /// An Argon2 hash in the PHC string format (`$argon2id$v=19$m=...`): salted and slow.
    Argon2(Box<PasswordHash>),
    /// The SHA-256 of the password: a `SHA256:` line, or a plain-text password (hashed
    /// on reading, so that every comparison is of 32 bytes, in constant time).
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

/// A line of a users file that is accepted but should be changed: a secret that is not
/// an Argon2 hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersFileWarning {
    /// 1-based line number.
    pub line: usize,
    /// The user of that line.
    pub user: String,
    /// What to change.
    pub message: String,
}

impl fmt::Display for UsersFileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "users file line {} ({}): {}",
            self.line, self.user, self.message
        )
    }
}

/// The users the server knows, read from a file of `name:secret:role` lines.
///
/// `secret` is one of:
/// - an Argon2 hash in the PHC string format, `$argon2id$v=19$m=19456,t=2,p=1$...`, as
///   `bayeux hash-password` prints it (or [`hash_password`] returns it): salted and
///   slow to guess, the form to use;
/// - `SHA256:` and the hex SHA-256 of the password (`printf %s 'password' | sha256sum`):
///   still accepted, with a warning ([`UserDirectory::warnings`]) to re-hash it, since an
///   unsalted fast hash is cheap to guess from a leaked file;
/// - the password itself: accepted for demos, with the same warning.
///
/// `role` is `agent` or `supervisor`. Blank lines and lines starting with `#` are
/// ignored. Every comparison takes the same time whatever matched (`subtle`).
///
/// Checking an Argon2 hash costs tens of milliseconds of CPU by design; so that a
/// client that handshakes again and again does not pay it each time, a password that
/// passed is remembered as a keyed SHA-256 (the key is random per process, so the
/// memo is worthless outside it) and later checks of the same password are as cheap
/// as a `SHA256:` line. A wrong password always pays the full price, and so does an
/// unknown user (checked against a decoy hash), so that the time of an answer does not
/// tell which user names exist.
///
/// [`UserDirectory::check`] is what servers call: slow checks run on tokio's blocking
/// threads, a bounded few at a time ([`CheckLimits`]); [`UserDirectory::verify`] runs on
/// the calling thread (for tools and tests).
pub struct UserDirectory {
    users: HashMap<String, UserEntry>,
    warnings: Vec<UsersFileWarning>,
    /// Per user, the keyed digest of the last password that passed its Argon2 check.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// The random key of those digests.
    memo_key: [u8; 32],
    /// What an unknown user's password is checked against: an Argon2 hash when the
    /// file has any, so that unknown and known users cost the same.
    decoy: Secret,
    /// Where slow checks run, and the per-user throttle.
    checks: Checks,
}

/// The outcome of [`UserDirectory::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The password is right: the user has this role.
    Valid(Role),
    /// A wrong password or an unknown user: one answer for both.
    Invalid,
    /// Too many checks are waiting: try again later.
    Busy,
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

/// The prefix of the secrets [`hash_password`] makes.
const ARGON2_PREFIX: &str = "$argon2";

impl UserDirectory {
    /// Parses the text of a users file.
    pub fn parse(text: &str) -> Result<Self, UsersFileError> {
        let mut users = HashMap::new();
        let mut warnings = Vec::new();
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
            let role =
                Role::from_name(role).ok_or_else(|| err("role must be agent or supervisor"))?;
            let mut warn = |message: String| {
                warnings.push(UsersFileWarning {
                    line: i + 1,
                    user: name.to_string(),
                    message,
                })
            };
            let rehash = format!(
                "re-hash it: `bayeux hash-password {name} --role {}`",
                role.as_str()
            );
            let secret = if secret.starts_with(ARGON2_PREFIX) {
                let hash = PasswordHash::new(secret)
                    .map_err(|e| err(&format!("not a valid Argon2 PHC string: {e}")))?;
                argon2::Algorithm::new(hash.algorithm.as_str())
                    .map_err(|_| err("not an Argon2 algorithm (argon2id, argon2i, argon2d)"))?;
                Secret::Argon2(Box::new(hash))
            } else if let Some(hex) = secret.strip_prefix("SHA256:") {
                let digest = parse_hex(hex).ok_or_else(|| err("SHA256: needs 64 hex digits"))?;
                warn(format!(
                    "an unsalted SHA-256 secret is cheap to guess from a leaked file; {rehash}"
                ));
                Secret::Sha256(digest)
            } else {
                warn(format!("a plain-text password; {rehash}"));
                Secret::Sha256(sha256(secret))
            };
            users.insert(name.to_string(), UserEntry { secret, role });
        }
        let mut memo_key = [0u8; 32];
        getrandom::fill(&mut memo_key).expect("the OS random source is available");
        let any_argon2 = users
            .values()
            .any(|u| matches!(u.secret, Secret::Argon2(_)));
        let decoy = if any_argon2 {
            let mut random = [0u8; 32];
            getrandom::fill(&mut random).expect("the OS random source is available");
            let hash = hash_password(&parse_hex_lossy(&random))
                .ok()
                .and_then(|h| PasswordHash::new(&h).ok());
            match hash {
                Some(hash) => Secret::Argon2(Box::new(hash)),
                None => Secret::Sha256(random),
            }
        } else {
            Secret::Sha256(memo_key)
        };
        Ok(UserDirectory {
            users,
            warnings,
            verified: Mutex::new(HashMap::new()),
            memo_key,
            decoy,
            checks: Checks::new(CheckLimits::default()),
        })
    }

    /// Sets how checks are bounded (see [`CheckLimits`]).
    #[must_use]
    pub fn with_checks(mut self, limits: CheckLimits) -> Self {
        self.checks = Checks::new(limits);
        self
    }

    /// What the checks have done so far.
    pub fn check_stats(&self) -> CheckStats {
        self.checks.stats()
    }

    /// Checks `password` for `user` coming from `client`, as a server should: a check
    /// that needs no slow hash (a `SHA256:` line, a password that passed before) is
    /// answered at once; a slow one runs on tokio's blocking threads within the
    /// [`CheckLimits`], never on the caller's thread. A user name with too many recent
    /// failures is checked slowly (delayed, in the suspects' lane), except from clients
    /// that signed in as it recently.
    pub async fn check(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        client: Option<ClientKey>,
    ) -> Check {
        let result = match self.quick(user, password) {
            Some(result) => result,
            None => {
                // A user name under attack: checks from addresses it was not used from
                // recently wait, and queue with the suspects.
                let throttled = self.checks.throttled(user, client);
                if throttled {
                    tokio::time::sleep(self.checks.throttle_delay()).await;
                }
                let suspect = throttled || self.checks.is_suspect(client);
                let (this, u, p) = (self.clone(), user.to_string(), password.to_string());
                match self.checks.run(suspect, move || this.verify(&u, &p)).await {
                    Ok(result) => result,
                    Err(Skipped::Busy) => return Check::Busy,
                    Err(Skipped::Failed) => None,
                }
            }
        };
        match result {
            Some(role) => {
                self.checks.succeeded(user, client);
                Check::Valid(role)
            }
            None => {
                self.checks.failed(user, client);
                Check::Invalid
            }
        }
    }

    /// The answer when no slow hash is needed: a `SHA256:` or plain line (or an unknown
    /// user where the file has no Argon2 line), or a password that passed before.
    fn quick(&self, user: &str, password: &str) -> Option<Option<Role>> {
        let secret = self.users.get(user).map_or(&self.decoy, |e| &e.secret);
        match secret {
            Secret::Sha256(_) => Some(self.verify(user, password)),
            Secret::Argon2(_) => {
                let memo = self.memo(user, password);
                let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                let known = verified
                    .get(user)
                    .is_some_and(|known| bool::from(known.ct_eq(&memo)));
                drop(verified);
                known.then(|| self.users.get(user).map(|e| e.role))
            }
        }
    }

    /// The lines that are accepted but should be changed (secrets that are not Argon2
    /// hashes), in file order: `bayeux serve` prints them at start-up.
    pub fn warnings(&self) -> &[UsersFileWarning] {
        &self.warnings
    }

    /// The user's role when `password` is right; `None` otherwise. Runs a slow check
    /// on the calling thread: servers call [`UserDirectory::check`] instead.
    pub fn verify(&self, user: &str, password: &str) -> Option<Role> {
        let Some(entry) = self.users.get(user) else {
            // The same work as for a known user, and the same answer.
            match &self.decoy {
                Secret::Sha256(digest) => {
                    let _ = digest.ct_eq(&sha256(password));
                }
                Secret::Argon2(hash) => {
                    let _ = Argon2::default().verify_password(password.as_bytes(), &**hash);
                }
            }
            return None;
        };
        let ok = match &entry.secret {
            Secret::Sha256(digest) => bool::from(digest.ct_eq(&sha256(password))),
            Secret::Argon2(hash) => self.verify_argon2(user, hash, password),
        };
        ok.then_some(entry.role)
    }

    fn verify_argon2(&self, user: &str, hash: &PasswordHash, password: &str) -> bool {
        let memo = self.memo(user, password);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified
            .get(user)
            .is_some_and(|known| bool::from(known.ct_eq(&memo)))
        {
            return true;
        }
        // Not held across the slow check: other users' checks go on meanwhile.
        drop(verified);
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
        if ok {
            verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            verified.insert(user.to_string(), memo);
        }
        ok
    }

    /// The keyed digest that stands for a password that passed.
    fn memo(&self, user: &str, password: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.memo_key)
            .chain_update((user.len() as u64).to_be_bytes())
            .chain_update(user)
            .chain_update(password)
            .finalize()
            .into()
    }
}

/// Hashes `password` for the users file: Argon2id with a random 16-byte salt and the
/// default cost (19 MiB of memory, 2 passes: OWASP's recommendation), in the PHC string
/// format (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which
/// [`UserDirectory::parse`] accepts as a line's secret.
///
/// Errors only when the operating system's random source fails.
pub fn hash_password(password: &str) -> std::io::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| std::io::Error::other(format!("hashing the password: {e}")))
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Random bytes as hex: a decoy password nobody knows.
fn parse_hex_lossy(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// The `user` and `password` of an `Authorization: Basic` header, if there is a valid one.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

/// Who may use the demo server, and which agent each Bayeux session belongs to.
#[derive(Debug)]
pub struct Access {
    directory: Option<Arc<UserDirectory>>,
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
    /// Too many checks are waiting: 503, try again.
    Busy,
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
            directory: Some(Arc::new(directory)),
            trust_ext_user_id: false,
        }
    }

    /// The users file in checked mode, for its [`UserDirectory::check_stats`].
    pub fn directory(&self) -> Option<&Arc<UserDirectory>> {
        self.directory.as_ref()
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

    /// Checks a caller of the workbin endpoint from `client` (its password checked off
    /// the caller's thread, as for handshakes).
    pub async fn workbin_caller(&self, headers: &HeaderMap, client: Option<ClientKey>) -> Caller {
        let Some(directory) = &self.directory else {
            return Caller::Allowed;
        };
        match basic_credentials(headers) {
            Some((user, password)) => match directory.check(&user, &password, client).await {
                Check::Valid(Role::Supervisor) => Caller::Allowed,
                Check::Valid(Role::Agent) => Caller::NotSupervisor(user),
                Check::Invalid => Caller::Unauthenticated,
                Check::Busy => Caller::Busy,
            },
            None => Caller::Unauthenticated,
        }
    }
}

impl SecurityPolicy for Access {
    fn handshake<'a>(
        &'a self,
        request: HandshakeRequest<'a>,
    ) -> PolicyFuture<'a, HandshakeDecision> {
        Box::pin(self.decide(request))
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

impl Access {
    /// The handshake decision: Basic credentials checked against the users file (off
    /// the I/O threads), `ext.userId` when trusted, anonymous in demo mode.
    async fn decide(&self, request: HandshakeRequest<'_>) -> HandshakeDecision {
        if let Some((user, password)) = basic_credentials(request.headers) {
            let Some(directory) = &self.directory else {
                return HandshakeDecision::Accept { user: Some(user) };
            };
            return match directory.check(&user, &password, request.client).await {
                Check::Valid(_) => HandshakeDecision::Accept { user: Some(user) },
                Check::Invalid => HandshakeDecision::Deny("invalid credentials".into()),
                Check::Busy => HandshakeDecision::Busy("credential checks are busy".into()),
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
    fn argon2_lines_are_accepted_and_others_warned_about() {
        let hash = hash_password("s3cret:with:colons").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let d = UserDirectory::parse(&format!("{FILE}boss2:{hash}:supervisor\n")).unwrap();
        assert_eq!(
            d.verify("boss2", "s3cret:with:colons"),
            Some(Role::Supervisor)
        );
        // Again: the memo answers, with the same result.
        assert_eq!(
            d.verify("boss2", "s3cret:with:colons"),
            Some(Role::Supervisor)
        );
        assert_eq!(d.verify("boss2", "s3cret"), None);
        assert_eq!(
            d.verify("boss2", "s3cret:with:colons"),
            Some(Role::Supervisor)
        );
        // The SHA-256 line and the two plain ones are accepted with a warning each.
        let warned: Vec<(usize, &str)> = d
            .warnings()
            .iter()
            .map(|w| (w.line, w.user.as_str()))
            .collect();
        assert_eq!(warned, [(3, "sup"), (4, "agent1"), (5, "agent2")]);
        assert!(d.warnings()[0].message.contains("SHA-256"));
        assert!(
            d.warnings()[0]
                .to_string()
                .contains("bayeux hash-password sup --role supervisor")
        );
        // Two hashes of one password differ (salted).
        assert_ne!(hash, hash_password("s3cret:with:colons").unwrap());
        let e = UserDirectory::parse("x:$argon2id$v=19$broken!:agent")
            .err()
            .unwrap();
        assert!(e.message.contains("Argon2"), "{e}");
        let e = UserDirectory::parse(&format!("x:{}:agent", hash.replace("argon2id", "argon2x")))
            .err()
            .unwrap();
        assert!(e.message.contains("not an Argon2 algorithm"), "{e}");
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
        let token = base64::engine::general_purpose::STANDARD.encode(b"agent1:pw:with:colons");
        assert_eq!(
            basic_credentials(&headers(&format!("Basic {token}"))),
            Some(("agent1".into(), "pw:with:colons".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer abc")), None);
        assert_eq!(basic_credentials(&headers("Basic !!!")), None);
        assert_eq!(
            basic_credentials(&headers(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b":pw")
            ))),
            None
        );
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn workbin_callers() {
        let access = Access::checked(UserDirectory::parse(FILE).unwrap());
        let basic = |u: &str, p: &str| {
            headers(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}").as_bytes())
            ))
        };
        assert_eq!(
            access.workbin_caller(&basic("sup", "password"), None).await,
            Caller::Allowed
        );
        assert_eq!(
            access.workbin_caller(&basic("agent1", "pw1"), None).await,
            Caller::NotSupervisor("agent1".into())
        );
        assert_eq!(
            access.workbin_caller(&basic("sup", "wrong"), None).await,
            Caller::Unauthenticated
        );
        assert_eq!(
            access.workbin_caller(&HeaderMap::new(), None).await,
            Caller::Unauthenticated
        );
        assert_eq!(
            Access::demo().workbin_caller(&HeaderMap::new(), None).await,
            Caller::Allowed
        );
    }
}
