//! The egress sources of one shard's delivery, and which source each
//! message leaves from: the local address a connection binds to, the EHLO
//! name it gives from there, and the choice among a pool's sources by
//! weight, per destination.
//!
//! Without `[[source]]` there is one source, the machine's own address
//! (no bind) with `[delivery] helo_name`, in one pool: delivery is what it
//! was before sources existed.
//! A source whose mail to a destination was moved elsewhere (its warm-up
//! budget for the day spent, or a `reroute` suspension) is avoided for
//! that destination's new mail here until then, while the pool has
//! another.
//! Must never: send a message from an address outside its pool (a pool
//! id that no pool has any more goes to the default pool, and says so).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use spool_format::envelope::pool_id;

use crate::config::Config;
use crate::schedule::EgressId;
use crate::shaping::weighted::SmoothWeighted;
use crate::smtp::client::ClientConfig;

/// One source: where connections bind, and what they say in EHLO.
pub struct Source {
    pub name: String,
    /// `None`: the machine's default address (no bind).
    pub address: Option<IpAddr>,
    pub client: Arc<ClientConfig>,
}

/// One pool: its sources (indexes into the sources) and their weights.
struct Pool {
    name: String,
    members: Vec<EgressId>,
    weights: Vec<u32>,
}

/// The sources and pools of a shard, with the weighted choice's state.
pub struct Egress {
    sources: Vec<Source>,
    pools: Vec<Pool>,
    /// Pool ids as the spool records them, to pool indexes.
    by_id: HashMap<u16, usize>,
    default_pool: usize,
    /// The weighted choice per pool and destination, so that each
    /// destination sees the pool's weights.
    choices: RefCell<HashMap<(usize, Rc<str>), SmoothWeighted>>,
    /// Pool ids found in the spool that no pool has, each logged once.
    unknown: RefCell<Vec<u16>>,
    /// Source × destination pairs new mail avoids, until when (monotonic
    /// ms).
    avoided: RefCell<HashMap<(EgressId, Rc<str>), u64>>,
}

/// Destinations whose weighted choice is remembered, at most: past it the
/// memory starts afresh (each destination then starts its round again,
/// which keeps the weights over the next messages).
const MAX_CHOICES: usize = 65_536;

impl Egress {
    /// The sources and pools of `config`; `client` is the SMTP client's
    /// configuration, whose EHLO name each source replaces with its own.
    pub fn new(config: &Config, client: &ClientConfig) -> Egress {
        if config.source.is_empty() {
            return Egress::machine_default(client);
        }
        let sources: Vec<Source> = config
            .source
            .iter()
            .map(|s| Source {
                name: s.name.clone(),
                address: Some(s.address),
                client: Arc::new(ClientConfig {
                    helo_name: s.ehlo.clone(),
                    ..client.clone()
                }),
            })
            .collect();
        let index = |name: &str| sources.iter().position(|s| s.name == name);
        let pools: Vec<Pool> = config
            .pool
            .iter()
            .map(|p| {
                let (members, weights) = p
                    .sources
                    .iter()
                    .filter_map(|m| Some((index(&m.source)? as EgressId, m.weight)))
                    .unzip();
                Pool {
                    name: p.name.clone(),
                    members,
                    weights,
                }
            })
            .collect();
        let default_pool = pools
            .iter()
            .position(|p| p.name == config.pool_selection.default)
            .unwrap_or(0);
        let by_id = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (pool_id(&p.name), i))
            .collect();
        Egress {
            sources,
            pools,
            by_id,
            default_pool,
            choices: RefCell::new(HashMap::new()),
            unknown: RefCell::new(Vec::new()),
            avoided: RefCell::new(HashMap::new()),
        }
    }

    /// One source, the machine's own address, in one pool.
    fn machine_default(client: &ClientConfig) -> Egress {
        Egress {
            sources: vec![Source {
                name: "default".to_owned(),
                address: None,
                client: Arc::new(client.clone()),
            }],
            pools: vec![Pool {
                name: "default".to_owned(),
                members: vec![0],
                weights: vec![1],
            }],
            by_id: HashMap::new(),
            default_pool: 0,
            choices: RefCell::new(HashMap::new()),
            unknown: RefCell::new(Vec::new()),
            avoided: RefCell::new(HashMap::new()),
        }
    }

    pub fn source(&self, id: EgressId) -> &Source {
        &self.sources[usize::from(id).min(self.sources.len() - 1)]
    }

    /// The source the next message of pool `pool` (its id as the spool
    /// records it; 0 for none) to `destination` leaves from at `now_ms`
    /// (monotonic): by weight among the sources not avoided for the
    /// destination, or among all when every one is.
    pub fn choose(&self, pool: u16, destination: &Rc<str>, now_ms: u64) -> EgressId {
        let p = self.pool_index(pool);
        if self.pools[p].members.len() == 1 {
            return self.pools[p].members[0];
        }
        let open = |id: EgressId| !self.avoids(id, destination, now_ms);
        let any = self.pools[p].members.iter().any(|&id| open(id));
        self.choose_where(pool, destination, |id| !any || open(id))
            .unwrap_or(self.pools[p].members[0])
    }

    /// A source of pool `pool` for which `fits` holds, chosen by weight
    /// for `destination`; `None` when none does.
    pub fn choose_where(
        &self,
        pool: u16,
        destination: &Rc<str>,
        fits: impl Fn(EgressId) -> bool,
    ) -> Option<EgressId> {
        let p = self.pool_index(pool);
        let members = &self.pools[p];
        let mut choices = self.choices.borrow_mut();
        if choices.len() >= MAX_CHOICES {
            choices.clear();
        }
        let choice = choices
            .entry((p, destination.clone()))
            .or_insert_with(|| SmoothWeighted::new(&members.weights));
        choice
            .next(|i| fits(members.members[i]))
            .map(|i| members.members[i])
    }

    /// A source of pool `pool` other than `from`, of the other address
    /// family than `from`'s (or the machine's own address, which reaches
    /// both), chosen by weight: where mail goes that `from` cannot send
    /// to `destination` because all its addresses are of the other
    /// family. `None` when the pool has no such source.
    pub fn other_family(
        &self,
        pool: u16,
        destination: &Rc<str>,
        from: EgressId,
    ) -> Option<EgressId> {
        let theirs = self.source(from).address?;
        self.choose_where(pool, destination, |id| {
            id != from
                && self
                    .source(id)
                    .address
                    .is_none_or(|a| a.is_ipv4() != theirs.is_ipv4())
        })
    }

    /// New mail to `destination` avoids `source` until `until_ms`
    /// (monotonic) while its pool has another source; true when it was
    /// not avoided already (for logging once).
    pub fn avoid(
        &self,
        source: EgressId,
        destination: &Rc<str>,
        until_ms: u64,
        now_ms: u64,
    ) -> bool {
        let mut avoided = self.avoided.borrow_mut();
        if avoided.len() >= MAX_CHOICES {
            avoided.retain(|_, until| *until > now_ms);
        }
        let until = avoided.entry((source, destination.clone())).or_insert(0);
        let new = *until <= now_ms;
        *until = (*until).max(until_ms);
        new
    }

    /// Ends every avoidance of `destination` by the sources `pick`
    /// chooses (an operator's resume).
    pub fn unavoid(&self, destination: &str, pick: impl Fn(EgressId) -> bool) {
        self.avoided
            .borrow_mut()
            .retain(|(source, d), _| !(pick(*source) && d.eq_ignore_ascii_case(destination)));
    }

    /// The id of the source named `name`.
    pub fn source_id(&self, name: &str) -> Option<EgressId> {
        let i = self.sources.iter().position(|s| s.name == name)?;
        EgressId::try_from(i).ok()
    }

    /// The sources of the pool named `name`.
    pub fn pool_sources(&self, name: &str) -> Option<&[EgressId]> {
        let p = self.pools.iter().find(|p| p.name == name)?;
        Some(&p.members)
    }

    /// Whether pool `pool` (its id as the spool records it) has source
    /// `source`.
    pub fn pool_has(&self, pool: u16, source: EgressId) -> bool {
        self.pools[self.pool_index(pool)].members.contains(&source)
    }

    /// How many sources there are.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// True while `source` is avoided for `destination`.
    fn avoids(&self, source: EgressId, destination: &Rc<str>, now_ms: u64) -> bool {
        let mut avoided = self.avoided.borrow_mut();
        if avoided.is_empty() {
            return false;
        }
        let key = (source, destination.clone());
        match avoided.get(&key) {
            Some(&until) if until > now_ms => true,
            Some(_) => {
                avoided.remove(&key);
                false
            }
            None => false,
        }
    }

    /// The sources' names, by source id.
    pub fn source_names(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name.as_str()).collect()
    }

    /// The pools' names, by pool index.
    pub fn pool_names(&self) -> Vec<&str> {
        self.pools.iter().map(|p| p.name.as_str()).collect()
    }

    /// The name of the pool of index `pool` (as `pool_index` gives).
    pub fn pool_name(&self, pool: usize) -> &str {
        self.pools.get(pool).map_or("default", |p| p.name.as_str())
    }

    /// The index of the pool the spool records as `pool` (the default
    /// pool for 0 or an id no pool has).
    pub fn pool_index(&self, pool: u16) -> usize {
        if pool == 0 {
            return self.default_pool;
        }
        match self.by_id.get(&pool) {
            Some(&i) => i,
            None => {
                let mut unknown = self.unknown.borrow_mut();
                if !unknown.contains(&pool) {
                    unknown.push(pool);
                    tracing::warn!(
                        pool_id = pool,
                        default = %self.pools[self.default_pool].name,
                        "queued mail names a pool the config no longer has; it leaves from the default pool"
                    );
                }
                self.default_pool
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress() -> Egress {
        let text = "[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\nehlo = \"a.test\"\n\
                    [[source]]\nname = \"b\"\naddress = \"127.0.0.3\"\n\
                    [[source]]\nname = \"six\"\naddress = \"::1\"\n\
                    [[pool]]\nname = \"main\"\nsources = [{ source = \"a\", weight = 3 }, { source = \"b\" }, { source = \"six\" }]\n\
                    [[pool]]\nname = \"solo\"\nsources = [{ source = \"b\" }]\n\
                    [pool_selection]\ndefault = \"main\"\n";
        let config = Config::from_str_named(text, "test.toml").expect("config");
        Egress::new(&config, &ClientConfig::default())
    }

    fn counts(e: &Egress, pool: u16, dest: &Rc<str>, now: u64, n: usize) -> [usize; 3] {
        let mut counts = [0; 3];
        for _ in 0..n {
            counts[usize::from(e.choose(pool, dest, now))] += 1;
        }
        counts
    }

    #[test]
    fn each_destination_sees_the_pools_weights() {
        let e = egress();
        assert_eq!(e.source(0).client.helo_name, "a.test");
        let (gmail, yahoo): (Rc<str>, Rc<str>) = (Rc::from("gmail.com"), Rc::from("yahoo.com"));
        assert_eq!(counts(&e, 0, &gmail, 0, 500), [300, 100, 100]);
        assert_eq!(counts(&e, pool_id("main"), &yahoo, 0, 5), [3, 1, 1]);
        assert_eq!(counts(&e, pool_id("solo"), &gmail, 0, 7), [0, 7, 0]);
        // A pool the config no longer has: the default pool.
        assert_eq!(counts(&e, 12_345, &yahoo, 0, 5), [3, 1, 1]);
    }

    #[test]
    fn an_avoided_source_gets_no_new_mail_until_its_time() {
        let e = egress();
        let dest: Rc<str> = Rc::from("avoid.example");
        assert!(e.avoid(0, &dest, 1_000, 0), "new");
        assert!(!e.avoid(0, &dest, 500, 0), "already avoided");
        assert_eq!(counts(&e, 0, &dest, 999, 40), [0, 20, 20]);
        let other: Rc<str> = Rc::from("other.example");
        assert_eq!(
            counts(&e, 0, &other, 999, 5),
            [3, 1, 1],
            "only that destination"
        );
        assert_eq!(
            counts(&e, 0, &dest, 1_000, 5),
            [3, 1, 1],
            "over at its time"
        );
        // Every source avoided: the choice falls back to all of them
        // (the connection then holds the mail back).
        for id in 0..3 {
            e.avoid(id, &dest, 2_000, 1_000);
        }
        assert_eq!(counts(&e, 0, &dest, 1_500, 5).iter().sum::<usize>(), 5);
    }

    #[test]
    fn the_other_family_is_a_source_of_the_same_pool() {
        let e = egress();
        let dest: Rc<str> = Rc::from("six.example");
        assert_eq!(e.other_family(0, &dest, 0), Some(2));
        assert_eq!(e.other_family(0, &dest, 2).map(|id| id < 2), Some(true));
        assert_eq!(e.other_family(pool_id("solo"), &dest, 1), None);
        assert_eq!(e.choose_where(0, &dest, |id| id == 1), Some(1));
        assert_eq!(e.choose_where(0, &dest, |_| false), None);
    }
}
