//! What the review API and the review page share: the config, each reviewer's token digest and
//! the page's signed-in sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Config;

pub(super) struct AppState {
    pub(super) cfg: Config,
    /// Reviewer name and the digest of their token.
    pub(super) reviewers: Vec<(String, blake3::Hash)>,
    /// The review page's sessions (`review::page`).
    pub(super) sessions: Sessions,
    /// Cookies carry `Secure` (the API serves TLS itself).
    pub(super) secure: bool,
}

impl AppState {
    /// The reviewer a token belongs to. Every digest is compared (constant time each: BLAKE3
    /// hashes compare so), whichever matches.
    pub(super) fn reviewer_of(&self, token: &str) -> Option<String> {
        let digest = blake3::hash(token.as_bytes());
        let mut who = None;
        for (name, d) in &self.reviewers {
            if digest == *d && !token.is_empty() {
                who = Some(name.clone());
            }
        }
        who
    }
}

pub(super) struct Session {
    pub(super) reviewer: String,
    pub(super) csrf: String,
    pub(super) expires: Instant,
    /// What the last decision did, shown once.
    pub(super) flash: Option<String>,
}

/// Signed-in reviewers by session id (in memory: a restart signs everyone out).
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
