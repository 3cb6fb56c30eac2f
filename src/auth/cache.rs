//! Authorizations of HTTP publishers (`--http-publish-auth`), kept until
//! their TTL so that every `/pub` does not call the auth server.
//!
//! Keyed by what the auth server was asked: the secret, the client's IP
//! address and whether it came over TLS (`common_name` is always "" over
//! HTTP). Only valid replies are kept; a failed call is asked again next
//! time. At most `capacity` entries: a full cache first drops the expired
//! ones, then the one expiring soonest. Times are passed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::reply::Authorization;

/// How many authorizations the HTTP publish guard keeps.
pub const DEFAULT_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    secret: Vec<u8>,
    remote_ip: String,
    tls: bool,
}

/// A bounded map from (secret, IP address, TLS) to an unexpired authorization.
#[derive(Debug)]
pub struct AuthCache {
    capacity: usize,
    entries: Mutex<HashMap<Key, Arc<Authorization>>>,
}

impl AuthCache {
    pub fn new(capacity: usize) -> AuthCache {
        assert!(capacity > 0);
        AuthCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Authorization>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The authorization for this question, unless absent or expired at `now`.
    pub fn get(
        &self,
        secret: &[u8],
        remote_ip: &str,
        tls: bool,
        now: Instant,
    ) -> Option<Arc<Authorization>> {
        let key = Key {
            secret: secret.to_vec(),
            remote_ip: remote_ip.to_owned(),
            tls,
        };
        let mut entries = self.entries();
        let authorization = entries.get(&key)?;
        if authorization.is_expired(now) {
            entries.remove(&key);
            return None;
        }
        Some(authorization.clone())
    }

    /// Keeps `authorization` for this question, making room if full.
    pub fn insert(
        &self,
        secret: &[u8],
        remote_ip: &str,
        tls: bool,
        authorization: Arc<Authorization>,
        now: Instant,
    ) {
        let key = Key {
            secret: secret.to_vec(),
            remote_ip: remote_ip.to_owned(),
            tls,
        };
        let mut entries = self.entries();
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, kept| !kept.is_expired(now));
        }
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            let soonest = entries
                .iter()
                .min_by_key(|(_, kept)| kept.expires_at())
                .map(|(key, _)| key.clone())
                .expect("a full cache has entries");
            entries.remove(&soonest);
        }
        entries.insert(key, authorization);
        assert!(entries.len() <= self.capacity);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn authorization(ttl_s: u64, now: Instant) -> Arc<Authorization> {
        let body = format!(r#"{{"ttl":{ttl_s},"identity":"ttl{ttl_s}"}}"#);
        Arc::new(Authorization::parse(body.as_bytes(), now).unwrap())
    }

    #[test]
    fn keeps_an_authorization_until_its_ttl() {
        let cache = AuthCache::new(4);
        let now = Instant::now();
        cache.insert(b"s", "10.0.0.1", false, authorization(2, now), now);
        assert!(cache.get(b"s", "10.0.0.1", false, now).is_some());
        assert!(cache.get(b"s", "10.0.0.2", false, now).is_none());
        assert!(cache.get(b"s", "10.0.0.1", true, now).is_none());
        assert!(cache.get(b"t", "10.0.0.1", false, now).is_none());
        let at_ttl = now + Duration::from_secs(2);
        assert!(cache.get(b"s", "10.0.0.1", false, at_ttl).is_some());
        let after = at_ttl + Duration::from_millis(1);
        assert!(cache.get(b"s", "10.0.0.1", false, after).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let cache = AuthCache::new(2);
        let now = Instant::now();
        cache.insert(b"a", "ip", false, authorization(1, now), now);
        cache.insert(b"b", "ip", false, authorization(100, now), now);
        let later = now + Duration::from_secs(5);
        cache.insert(b"c", "ip", false, authorization(10, later), later);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b"a", "ip", false, later).is_none());
        cache.insert(b"d", "ip", false, authorization(50, later), later);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(b"c", "ip", false, later).is_none(),
            "c expired soonest"
        );
        assert!(cache.get(b"b", "ip", false, later).is_some());
        assert!(cache.get(b"d", "ip", false, later).is_some());
        cache.insert(b"d", "ip", false, authorization(60, later), later);
        assert_eq!(cache.len(), 2, "replacing an entry evicts nothing");
        let identity = &cache.get(b"d", "ip", false, later).unwrap().identity;
        assert_eq!(identity, "ttl60");
    }
}
