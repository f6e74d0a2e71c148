//! The live sessions, indexed by `clientId` and by user, under one lock so the two
//! indexes never disagree.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::session::SessionRef;

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, SessionRef>,
    by_user: HashMap<String, Vec<SessionRef>>,
    /// Set by shutdown: no session is added afterwards.
    closed: bool,
}

/// What [`Registry::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The session is registered.
    Added,
    /// The registry is closed: the server is shutting down.
    Closed,
    /// `maxSessions` sessions are registered already.
    Full,
}

/// Told when a user gains its first session or loses its last (the broker's
/// `user_interest`), under the registry's lock so the changes arrive in order.
pub(crate) type UserInterest = Box<dyn Fn(&str, bool) + Send + Sync>;

/// Session lookup for the handlers (by `clientId`) and for per-user delivery.
#[derive(Default)]
pub(crate) struct Registry {
    maps: RwLock<Maps>,
    user_interest: Option<UserInterest>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A registry that reports each user's first and last session to `interest`.
    pub fn with_user_interest(interest: UserInterest) -> Self {
        Registry {
            maps: RwLock::default(),
            user_interest: Some(interest),
        }
    }

    pub fn get(&self, client_id: &str) -> Option<SessionRef> {
        self.read().by_id.get(client_id).cloned()
    }

    /// Adds the session, unless the registry is closed (a handshake racing with
    /// shutdown cannot leave a session behind) or already holds `limit` sessions (the
    /// check and the insert under one lock, so concurrent handshakes cannot overshoot
    /// `maxSessions`).
    pub fn insert(&self, session: SessionRef, limit: usize) -> Insert {
        let mut maps = self.write();
        if maps.closed {
            return Insert::Closed;
        }
        if maps.by_id.len() >= limit {
            return Insert::Full;
        }
        if let Some(user) = &session.info.user {
            let sessions = maps.by_user.entry(user.clone()).or_default();
            sessions.push(session.clone());
            if sessions.len() == 1
                && let Some(interest) = &self.user_interest
            {
                interest(user, true);
            }
        }
        maps.by_id.insert(session.id().to_string(), session);
        Insert::Added
    }

    /// Refuses every later insert and hands back the sessions present.
    pub fn close(&self) -> Vec<SessionRef> {
        let mut maps = self.write();
        maps.closed = true;
        maps.by_id.values().cloned().collect()
    }

    /// Removes the session; false if it was already gone.
    pub fn remove(&self, session: &SessionRef) -> bool {
        let mut maps = self.write();
        let removed = maps.by_id.remove(session.id()).is_some();
        if let Some(user) = &session.info.user
            && let Some(list) = maps.by_user.get_mut(user)
        {
            let before = list.len();
            list.retain(|s| !Arc::ptr_eq(s, session));
            if list.is_empty() {
                maps.by_user.remove(user);
                if before > 0
                    && let Some(interest) = &self.user_interest
                {
                    interest(user, false);
                }
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// The sessions bound to `user`.
    pub fn of_user(&self, user: &str) -> Vec<SessionRef> {
        self.read().by_user.get(user).cloned().unwrap_or_default()
    }

    /// The sessions `pred` selects, without cloning the others.
    pub fn filter(&self, pred: impl Fn(&SessionRef) -> bool) -> Vec<SessionRef> {
        self.read()
            .by_id
            .values()
            .filter(|s| pred(s))
            .cloned()
            .collect()
    }
}
