//! The answers of LMTP servers to recipient probes, remembered for a
//! domain's `verify_cache` so a burst of mail to one user asks once.
//! One cache per shard (no sharing between cores); bounded in size.

use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// This shard's answers (a shard is a thread).
    static SHARD_CACHE: RefCell<VerifyCache> = RefCell::new(VerifyCache::default());
}

/// Calls `f` with this shard's cache.
pub fn with_shard_cache<R>(f: impl FnOnce(&mut VerifyCache) -> R) -> R {
    SHARD_CACHE.with(|c| f(&mut c.borrow_mut()))
}

/// Answers kept, at most, per shard.
pub const MAX_ANSWERS: usize = 10_000;

/// Mailbox address → (exists, remembered until ms).
#[derive(Debug, Default)]
pub struct VerifyCache {
    answers: HashMap<String, (bool, u64)>,
}

impl VerifyCache {
    /// The answer for `mailbox` if it is still fresh at `now_ms`.
    pub fn get(&self, mailbox: &str, now_ms: u64) -> Option<bool> {
        match self.answers.get(mailbox) {
            Some(&(exists, until)) if now_ms < until => Some(exists),
            _ => None,
        }
    }

    /// Remembers an answer for `ttl_ms`. When full, the stale answers go
    /// first; if none is stale, every answer goes (they are only a cache,
    /// and one sweep is cheaper than keeping an order).
    pub fn put(&mut self, mailbox: &str, exists: bool, now_ms: u64, ttl_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        if self.answers.len() >= MAX_ANSWERS && !self.answers.contains_key(mailbox) {
            self.answers.retain(|_, &mut (_, until)| now_ms < until);
            if self.answers.len() >= MAX_ANSWERS {
                self.answers.clear();
            }
        }
        let until = now_ms.saturating_add(ttl_ms);
        self.answers.insert(mailbox.to_owned(), (exists, until));
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_and_negative_answers_expire() {
        let mut c = VerifyCache::default();
        c.put("a@example.org", true, 1000, 60_000);
        c.put("b@example.org", false, 1000, 60_000);
        assert_eq!(c.get("a@example.org", 2000), Some(true));
        assert_eq!(c.get("b@example.org", 60_999), Some(false));
        assert_eq!(c.get("b@example.org", 61_000), None);
        assert_eq!(c.get("c@example.org", 2000), None);
        c.put("d@example.org", true, 1000, 0);
        assert_eq!(
            c.get("d@example.org", 1000),
            None,
            "a zero cache keeps nothing"
        );
    }

    #[test]
    fn bounded_in_size() {
        let mut c = VerifyCache::default();
        for i in 0..MAX_ANSWERS {
            c.put(
                &format!("u{i}@example.org"),
                true,
                0,
                if i % 2 == 0 { 10 } else { 1000 },
            );
        }
        assert_eq!(c.len(), MAX_ANSWERS);
        c.put("new@example.org", true, 500, 1000);
        assert_eq!(c.len(), MAX_ANSWERS / 2 + 1, "the stale half went");
        for i in 0..MAX_ANSWERS {
            c.put(&format!("v{i}@example.org"), true, 500, 1000);
        }
        assert!(c.len() <= MAX_ANSWERS);
        assert_eq!(c.get("v9999@example.org", 600), Some(true));
    }
}
