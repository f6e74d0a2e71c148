//! CometD's multiple-clients detection: the long polls held per browser.
//!
//! A browser opens only a few connections per host (six over HTTP/1.1), and a held
//! `/meta/connect` keeps one busy for up to `timeout`. Two tabs of one page, each with
//! its own Bayeux session, would hold two; a few more tabs and the page's other
//! requests (the workbin POST, the stats) queue behind the long polls. The Bayeux spec
//! recommends the `BAYEUX_BROWSER` cookie to notice this, and CometD's servers do: the
//! sessions of one cookie may hold `maxSessionsPerBrowser` long polls at a time
//! (1 by default, over HTTP/1.1; no limit over HTTP/2, whose streams share one
//! connection); a connect of another session of the same browser is then answered at
//! once, with `advice: {"multiple-clients": true, "reconnect": "retry", "interval":
//! multiSessionInterval}`, so that client polls every `multiSessionInterval` instead of
//! holding a connection. WebSocket sessions are not counted: a socket is a connection
//! of its own, whatever the tab.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::RecipientId;

/// The long polls held right now, by browser cookie, then by session (a session may
/// briefly hold two: a new connect replaces the older one, which then returns).
#[derive(Debug, Default)]
pub(crate) struct Browsers {
    held: Mutex<HashMap<String, HashMap<RecipientId, usize>>>,
}

impl Browsers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<RecipientId, usize>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a long poll of `session` from `browser` if the browser's other sessions
    /// hold fewer than `limit` long polls between them (`None`: no limit). The guard
    /// keeps it counted until dropped; `None` means the browser has its share already,
    /// and this connect should not be held.
    pub fn hold(
        self: &Arc<Self>,
        browser: &str,
        session: RecipientId,
        limit: Option<usize>,
    ) -> Option<HeldPoll> {
        let mut held = self.lock();
        let sessions = held.entry(browser.to_string()).or_default();
        let others = sessions.keys().filter(|s| **s != session).count();
        if limit.is_some_and(|limit| others >= limit) {
            if sessions.is_empty() {
                held.remove(browser);
            }
            return None;
        }
        *sessions.entry(session).or_default() += 1;
        Some(HeldPoll {
            browsers: self.clone(),
            browser: browser.to_string(),
            session,
        })
    }

    /// How many browsers hold long polls right now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One counted long poll; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct HeldPoll {
    browsers: Arc<Browsers>,
    browser: String,
    session: RecipientId,
}

impl Drop for HeldPoll {
    fn drop(&mut self) {
        let mut held = self.browsers.lock();
        if let Some(sessions) = held.get_mut(&self.browser) {
            if let Some(n) = sessions.get_mut(&self.session) {
                *n -= 1;
                if *n == 0 {
                    sessions.remove(&self.session);
                }
            }
            if sessions.is_empty() {
                held.remove(&self.browser);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_browser_by_default() {
        let browsers = Arc::new(Browsers::default());
        let first = browsers.hold("b1", 1, Some(1)).expect("the first is held");
        // The same session again (a connect replacing its own): still held.
        let again = browsers
            .hold("b1", 1, Some(1))
            .expect("its own replacement");
        // Another session of the same browser: not held.
        assert!(browsers.hold("b1", 2, Some(1)).is_none());
        // Another browser: held.
        let other = browsers.hold("b2", 3, Some(1)).expect("another browser");
        drop(first);
        assert!(browsers.hold("b1", 2, Some(1)).is_none(), "one still held");
        drop(again);
        let second = browsers.hold("b1", 2, Some(1)).expect("the place is free");
        drop((second, other));
        assert_eq!(browsers.len(), 0, "nothing left behind");
    }

    #[test]
    fn limits() {
        let browsers = Arc::new(Browsers::default());
        let _a = browsers.hold("b", 1, None).unwrap();
        let _b = browsers.hold("b", 2, None).unwrap();
        assert!(browsers.hold("b", 3, Some(2)).is_none());
        assert!(browsers.hold("b", 4, Some(0)).is_none());
        assert!(browsers.hold("b", 1, Some(2)).is_some());
    }

    #[test]
    fn the_cookie_is_one_a_browser_keeps() {
        use crate::server::ServerConfig;
        use crate::server::http::browser_cookie_header;
        let cookie = |config: &ServerConfig, proto: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(p) = proto {
                headers.insert("x-forwarded-proto", p.parse().unwrap());
            }
            browser_cookie_header(config, &headers, "abc")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        let plain = ServerConfig::default();
        let cors =
            ServerConfig::default().with_cors_origins(vec!["https://console.example".into()]);
        // Plain HTTP: Lax (SameSite=None without Secure is refused by browsers).
        let lax = "BAYEUX_BROWSER=abc; Path=/; HttpOnly; SameSite=Lax";
        assert_eq!(cookie(&plain, None), lax);
        assert_eq!(cookie(&cors, None), lax);
        assert_eq!(cookie(&cors, Some("http")), lax);
        // Behind a TLS proxy: Secure; and None when pages of other sites may call,
        // partitioned so that browsers blocking third-party cookies keep it.
        assert_eq!(
            cookie(&plain, Some("https")),
            "BAYEUX_BROWSER=abc; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            cookie(&cors, Some("HTTPS")),
            "BAYEUX_BROWSER=abc; Path=/; HttpOnly; Secure; SameSite=None; Partitioned"
        );
    }
}
