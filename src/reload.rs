//! Reloading the configuration on SIGHUP without dropping a connection or
//! a message: the daemon reads and checks the file (and the AUTH users
//! file) on its signal thread, and publishes it; each shard picks it up at
//! its next housekeeping tick and puts it in force for what starts from
//! then on (sessions, messages, connection runs), while what is under way
//! finishes as it started.
//!
//! Owns: reading a new configuration, refusing an invalid one (the
//! running one stays, and the error names the file, line and column),
//! naming the changed settings that only a restart applies, and the
//! hand-over to the shards (a generation number they compare once a tick,
//! and the loaded configuration behind a lock only a reload takes).
//! Must never: make a shard wait, or apply part of a file that failed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::Users;
use crate::config::Config;
use crate::dkim::SignerTable;
use crate::hosted::{Recipients, Secret};

/// A configuration read and checked, with its AUTH users, its DKIM keys
/// and the recipient tables of its hosted domains (read here, never per
/// message).
#[derive(Clone)]
pub struct Loaded {
    pub config: Arc<Config>,
    pub users: Option<Arc<Users>>,
    pub dkim: Arc<SignerTable>,
    pub recipients: Arc<Recipients>,
}

/// The newest configuration, for the shards to pick up.
#[derive(Default)]
pub struct Published {
    generation: AtomicU64,
    latest: Mutex<Option<Loaded>>,
}

impl Published {
    pub fn new() -> Arc<Published> {
        Arc::new(Published::default())
    }

    /// Makes `loaded` the configuration the shards take next.
    pub fn publish(&self, loaded: Loaded) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(loaded);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The configuration published after generation `seen`, and its
    /// generation; `None` (one atomic load) when there is none.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Loaded)> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == seen {
            return None;
        }
        let latest = self.latest.lock().ok()?.clone()?;
        Some((generation, latest))
    }
}

/// Reads and checks `path`, the AUTH users file, the DKIM keys, the
/// users files and the alias file it names.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let users = match &config.auth.users_file {
        Some(file) => Some(Arc::new(Users::load(file).map_err(|e| e.to_string())?)),
        None => None,
    };
    let dkim = SignerTable::load(&config).map_err(|e| e.to_string())?;
    let recipients = Recipients::load(&config, Secret::MakeIfMissing).map_err(|e| e.to_string())?;
    Ok(Loaded {
        config: Arc::new(config),
        users,
        dkim: Arc::new(dkim),
        recipients: Arc::new(recipients),
    })
}

/// The settings that differ between `running` and `new` and take effect
/// only at a restart: what the shards, the spool, the listeners, the
/// admin endpoint, the DKIM signing threads, the accounting writer and the
/// outbound SMTP client were built from.
pub fn restart_keys(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.delivery, &new.delivery);
    let (x, y) = (&running.accounting, &new.accounting);
    [
        (
            "[server] shards",
            running.server.shards != new.server.shards,
        ),
        ("[spool]", running.spool != new.spool),
        ("[[listener]]", running.listener != new.listener),
        ("[admin]", running.admin != new.admin),
        (
            "[signing] threads",
            running.signing.threads != new.signing.threads,
        ),
        ("[delivery] paused", a.paused != b.paused),
        ("[delivery] tls", a.tls != b.tls),
        ("[delivery] tls_ca_file", a.tls_ca_file != b.tls_ca_file),
        ("[delivery] helo_name", a.helo_name != b.helo_name),
        (
            "[delivery] command_timeout",
            a.command_timeout != b.command_timeout,
        ),
        ("[delivery] data_timeout", a.data_timeout != b.data_timeout),
        (
            "a first [[source]] warmup (its counts are kept over restarts from the next start)",
            running.source.iter().all(|s| s.warmup.is_none())
                && new.source.iter().any(|s| s.warmup.is_some()),
        ),
        (
            "[accounting] path, format or rotation",
            x.path != y.path
                || x.format != y.format
                || x.rotate_size != y.rotate_size
                || x.rotate_interval != y.rotate_interval,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// SIGHUP: reads the file petrel was started with and publishes it, or
/// says why not; `started` is the configuration the daemon started with
/// (what the restart-only settings still come from).
pub fn on_hangup(path: Option<&Path>, started: &Config, published: &Published) {
    crate::notify::reloading();
    match path {
        None => tracing::warn!(
            "reload: petrel runs on its embedded default configuration; there is no file to read again"
        ),
        Some(path) => match load(path) {
            Err(e) => tracing::error!(
                "reload refused, the running configuration stays: {e}"
            ),
            Ok(loaded) => {
                let later = restart_keys(started, &loaded.config);
                if !later.is_empty() {
                    tracing::warn!(
                        settings = %later.join(", "),
                        "reload: these settings changed and take effect at the next restart"
                    );
                }
                published.publish(loaded);
                tracing::info!(config = %path.display(), "reload: configuration applied");
            }
        },
    }
    crate::notify::ready();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_str_named(text, "test.toml").expect("config")
    }

    #[test]
    fn restart_only_settings_are_named_and_the_rest_are_not() {
        let running = config("[[route]]\ndomain = \"*\"\nrelay = \"127.0.0.2:25\"\n");
        let routes = config("[[route]]\ndomain = \"*\"\nrelay = \"127.0.0.3:25\"\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n[delivery]\nmax_age = \"2d\"\n");
        assert!(restart_keys(&running, &routes).is_empty());
        let more = config(
            "[server]\nshards = 3\n[[listener]]\naddress = \"127.0.0.1:2626\"\n\
             [delivery]\nhelo_name = \"mta.example\"\n[signing]\nthreads = 2\n",
        );
        assert_eq!(
            restart_keys(&running, &more),
            [
                "[server] shards",
                "[[listener]]",
                "[signing] threads",
                "[delivery] helo_name"
            ]
        );
    }

    #[test]
    fn shards_see_each_published_configuration_once() {
        let published = Published::new();
        assert!(published.newer_than(0).is_none());
        let loaded = Loaded {
            config: Arc::new(Config::embedded_default()),
            users: None,
            dkim: Arc::new(SignerTable::default()),
            recipients: Arc::new(Recipients::default()),
        };
        published.publish(loaded.clone());
        let (generation, got) = published.newer_than(0).expect("published");
        assert_eq!(got.config, loaded.config);
        assert!(published.newer_than(generation).is_none());
        published.publish(loaded);
        assert!(published.newer_than(generation).is_some());
    }

    #[test]
    fn a_bad_file_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("petrel.toml");
        std::fs::write(&path, "[delivery]\nmax_age = \"forever\"\n").unwrap();
        let err = load(&path).err().expect("refused");
        assert!(err.contains(&format!("{}:2:11", path.display())), "{err}");
        std::fs::write(&path, "[auth]\nusers_file = \"/nonexistent/users\"\n").unwrap();
        let err = load(&path).err().expect("refused");
        assert!(err.contains("/nonexistent/users"), "{err}");
        let key = dir.path().join("broken.pem");
        std::fs::write(&key, "not a key").unwrap();
        let dkim = format!(
            "[[dkim]]\ndomain = \"example.com\"\nselector = \"s\"\nprivate_key = {key:?}\nalgorithm = \"rsa-sha256\"\n"
        );
        std::fs::write(&path, dkim).unwrap();
        let err = load(&path).err().expect("refused");
        assert!(
            err.contains(&key.display().to_string()) && err.contains("no private key"),
            "{err}"
        );
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, "a@example.org: b@example.org\nbroken line\n").unwrap();
        let hosted = format!(
            "[spool]\npath = {:?}\n[[domain]]\nname = \"example.org\"\ndelivery = \"lmtp\"\n\
             lmtp = \"127.0.0.1\"\nverify = \"none\"\n[aliases]\nfile = {aliases:?}\n",
            dir.path().join("spool")
        );
        std::fs::write(&path, hosted).unwrap();
        let err = load(&path).err().expect("refused");
        assert!(
            err.starts_with(&format!("{}:2: ", aliases.display())),
            "{err}"
        );
        std::fs::write(&aliases, "a@example.org: b@example.org\n").unwrap();
        let loaded = load(&path).expect("loaded");
        assert_eq!(loaded.recipients.counts(), (0, 1));
        assert!(
            dir.path().join("spool/srs-secret").exists(),
            "made at the first load"
        );
    }
}
