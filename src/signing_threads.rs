//! DKIM signing threads (`[signing] threads`): the private-key operation
//! of each signature (about 0.6 ms of CPU for RSA-2048) off the shard that
//! received the message. The shard keeps everything cheap (choosing the
//! keys, canonicalization, the body hash) and hands the data to sign, a
//! few hundred bytes per signature, to a helper pool (`petrel-dkim`); the
//! session awaits the fields without blocking its executor, before the
//! commit, as when the shard signs itself.
//! Must never: leave a message unsigned because of load (with the queue
//! full, the shard signs it itself), or make a shard wait on a lock.

use std::sync::OnceLock;

use crate::dkim::message::Prepared;
use crate::dkim::SignError;
use crate::helper_pool::{HelperPool, RanOn};

/// The name of the signing threads.
pub const THREAD_NAME: &str = "petrel-dkim";
/// Signatures waiting, per thread; beyond them a shard signs itself
/// rather than queue a message behind more than some tens of
/// milliseconds of signing.
pub const QUEUE_PER_THREAD: usize = 64;

static POOL: OnceLock<HelperPool> = OnceLock::new();

/// Starts `threads` signing threads, once per process (at daemon start);
/// 0 starts none, and shards sign themselves.
pub fn start(threads: usize) {
    if threads > 0 {
        POOL.get_or_init(|| pool(threads));
    }
}

/// A signing pool of `threads` threads.
pub fn pool(threads: usize) -> HelperPool {
    HelperPool::start(THREAD_NAME, threads, threads * QUEUE_PER_THREAD)
}

/// The signing threads, if started.
pub fn running() -> Option<&'static HelperPool> {
    POOL.get()
}

/// The signed fields of `prepared`, signed on `pool`, or on this thread
/// if the pool refuses it; and where it was signed.
pub async fn sign(pool: &HelperPool, prepared: Prepared) -> (Result<String, SignError>, RanOn) {
    match pool.run_or_here(move || prepared.sign()).await {
        Some(signed) => signed,
        None => (Err(SignError::Lost), RanOn::Pool),
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use super::*;
    use crate::config::Config;
    use crate::dkim::tests::{rsa_key, verify};
    use crate::dkim::{fields, keygen, message, Algorithm, SignerTable};
    use crate::helper_pool::Refused;

    const NOW: u64 = 1_772_000_000;
    const MESSAGE: &[u8] = b"Received: from x by y; Mon, 2 Mar 2026 10:00:00 +0000\r\n\
From: Alice <alice@news.example.com>\r\n\
To: bob@example.net\r\n\
Subject: signed on a thread\r\n\
\r\n\
Hello\r\n.a dot\r\n";

    /// A table of an RSA and an Ed25519 key for example.com, and their
    /// public keys (`p=`), in that order.
    fn table(dir: &std::path::Path) -> (SignerTable, [Vec<u8>; 2]) {
        let ed = keygen::generate(Algorithm::Ed25519Sha256, 0).unwrap();
        let mut text = String::new();
        for (name, pem, algorithm) in [
            ("rsa", &rsa_key().pem, "rsa-sha256"),
            ("ed", &ed.pem, "ed25519-sha256"),
        ] {
            let path = dir.join(format!("{name}.pem"));
            std::fs::write(&path, pem).unwrap();
            text.push_str(&format!(
                "[[dkim]]\ndomain = \"example.com\"\nselector = \"{name}\"\n\
                 private_key = {path:?}\nalgorithm = \"{algorithm}\"\n"
            ));
        }
        let config = Config::from_str_named(&text, "test.toml").unwrap();
        let table = SignerTable::load(&config).unwrap();
        (table, [rsa_key().public.clone(), ed.public])
    }

    /// The message in chunks, split inside its header section.
    fn parts() -> Vec<&'static [u8]> {
        MESSAGE.chunks(40).collect()
    }

    /// Checks that `signed` holds one verifying field per key, in order.
    fn assert_verifies(signed: &str, public: &[Vec<u8>; 2]) {
        let end = MESSAGE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let header = [signed.as_bytes(), &MESSAGE[..end]].concat();
        let body = &MESSAGE[end..];
        let found: Vec<String> = fields(&header)
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(b"DKIM-Signature"))
            .map(|f| String::from_utf8_lossy(f.raw).into_owned())
            .collect();
        assert_eq!(found.len(), 2, "{signed}");
        for (field, p) in found.iter().zip(public) {
            verify(field, &header, body, p).unwrap_or_else(|e| panic!("{e}\n{field}"));
            // Another body does not verify: the check can fail.
            assert!(verify(field, &header, b"Hello\r\n", p).is_err());
        }
    }

    #[test]
    fn fields_signed_on_the_threads_are_those_signed_on_the_shard_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (table, public) = table(dir.path());
        let here = message::sign(&table, &parts(), NOW)
            .unwrap()
            .expect("a key matches");
        let pool = pool(2);
        assert_eq!(pool.name(), THREAD_NAME);
        let prepared = message::prepare(&table, &parts(), NOW)
            .unwrap()
            .expect("a key matches");
        let (threaded, ran_on) = block_on(sign(&pool, prepared));
        assert_eq!(ran_on, RanOn::Pool);
        // RSASSA-PKCS1-v1_5 and Ed25519 are deterministic: the same bytes.
        let threaded = threaded.unwrap();
        assert_eq!(threaded, here);
        assert_verifies(&threaded, &public);
        let other = b"From: bob@other.example\r\n\r\nHi\r\n".as_slice();
        assert!(message::prepare(&table, &[other], NOW).unwrap().is_none());
    }

    #[test]
    fn with_the_queue_full_the_caller_signs_and_the_fields_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (table, public) = table(dir.path());
        let (release, held) = flume::bounded(1);
        let pool = HelperPool::start_full(THREAD_NAME, held);
        let prepared = message::prepare(&table, &parts(), NOW).unwrap().unwrap();
        let (signed, ran_on) = block_on(sign(&pool, prepared));
        assert_eq!(ran_on, RanOn::Caller(Refused::Full));
        let signed = signed.unwrap();
        assert_eq!(
            signed,
            message::sign(&table, &parts(), NOW).unwrap().unwrap()
        );
        assert_verifies(&signed, &public);
        drop(release);
    }
}
