//! DNS for the delivery path: MX selection, address lookups and a cache.
//!
//! Owns: building and parsing DNS messages (with hickory-proto), the choice
//! of MX hosts per RFC 5321 section 5.1 and RFC 7505, a TTL-honouring cache
//! with negative caching, IDNA for internationalised names, and a per-shard [`Resolver`] that talks to the
//! configured nameservers over glommio UDP, and TCP when a reply is
//! truncated.
//!
//! Must never: panic or unwrap on anything read from the network; read the
//! clock or draw randomness in the pure parts (`wire`, `mx`, `cache`,
//! `resolv_conf`), which take `now_ms` and seeds as inputs; share state
//! across shards (a `Resolver` is `!Send` and lives on one executor).
//!
//! The outcomes map to delivery decisions: [`MxPlan::NullMx`] bounces with
//! 5.1.10, [`MxPlan::NoSuchDomain`] bounces with 5.1.2, and a
//! [`DnsError`] that [`DnsError::is_temporary`] defers.

#![deny(unsafe_code)]

mod cache;
mod error;
pub mod fuzzing;
mod idn;
mod inflight;
mod mx;
mod os_random;
mod resolv_conf;
mod resolver;
mod rng;
mod transport;
mod wire;

pub use cache::{Cache, CacheLimits};
pub use error::{DnsError, TempReason};
pub use hickory_proto::rr::RecordType;
pub use idn::to_ascii;
pub use mx::{
    address_literal, mx_plan, HostKind, MxAnswer, MxHost, MxPlan, MxRecord, MAX_MX_HOSTS,
};
pub use resolv_conf::{parse_resolv_conf, read_system_nameservers, RESOLV_CONF};
pub use resolver::{Clock, Resolver, ResolverConfig};
pub use rng::XorShift;
pub use wire::{
    build_query, letters, parse_name, parse_response, with_case, CaseMatch, Outcome, Parsed,
    WireError,
};
