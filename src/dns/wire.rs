//! DNS messages on the wire: building queries and validating replies.
//!
//! Owns: the query format (RD set, EDNS0 advertising a 1232-byte UDP
//! payload, 0x20 case bits in the name), the checks that a reply belongs
//! to our query (id, question, and the question's case when 0x20 is on),
//! the classification of response codes, CNAME chain following inside one
//! reply, and the TTL a result may be cached for (RFC 2308 for negative
//! answers). Must never: do I/O, read the clock, or panic on any input.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::mx::MxRecord;

/// The UDP payload size we advertise (the DNS flag day 2020 value, which
/// avoids IP fragmentation on common paths).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// CNAME links followed inside one reply before giving up.
pub const MAX_CNAME_LINKS: usize = 8;

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed DNS message")]
    Malformed,
    #[error("message is not a response to a standard query")]
    NotResponse,
    #[error("reply id does not match the query")]
    IdMismatch,
    #[error("reply question does not match the query")]
    QuestionMismatch,
    #[error("reply truncated")]
    Truncated,
    #[error("SERVFAIL")]
    ServFail,
    #[error("REFUSED")]
    Refused,
    #[error("response code {0}")]
    Rcode(u16),
    #[error("CNAME chain too long")]
    CnameChain,
    #[error("cannot encode query")]
    Encode,
}

/// What a usable reply says about (name, type). Cacheable as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// MX records (never empty).
    Mx(Vec<MxRecord>),
    /// A or AAAA addresses (never empty).
    Addrs(Vec<IpAddr>),
    /// The name is an alias whose target's records were not in the reply;
    /// the caller asks again for the target.
    Alias(Name),
    /// The name exists but has no records of this type (NOERROR/NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

/// A validated reply: the outcome and how long it may be cached (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub outcome: Outcome,
    pub ttl: u32,
}

/// How a reply's question must spell the name that was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseMatch {
    /// Byte for byte: the query carried 0x20 case bits
    /// (draft-vixie-dnsext-dns0x20), which a reply must echo.
    Exact,
    /// Letters in either case (a server may normalise them).
    Any,
}

/// A domain as a lower-case fully-qualified DNS name, its U-labels (if
/// any) converted to A-labels.
pub fn parse_name(domain: &str) -> Result<Name, super::DnsError> {
    let invalid = || super::DnsError::InvalidName(domain.to_string());
    let domain = &*super::idn::to_ascii(domain)?;
    if domain.is_empty() || domain.len() > 253 || domain.starts_with('.') {
        return Err(invalid());
    }
    let mut name = Name::from_ascii(domain).map_err(|_| invalid())?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err(invalid());
    }
    Ok(name.to_lowercase())
}

/// Letters in `name`: how many case bits [`with_case`] can use.
pub fn letters(name: &Name) -> usize {
    name.iter()
        .map(|label| label.iter().filter(|b| b.is_ascii_alphabetic()).count())
        .sum()
}

/// `name` with its letters in the case `bits` say (bit `i` for the
/// `i`-th letter, 1 = upper case); letters past the bits are lower case.
/// Each letter an off-path spoofer must guess doubles the odds against
/// it (0x20).
pub fn with_case(name: &Name, bits: &[u64]) -> Result<Name, WireError> {
    let mut letter = 0usize;
    let mut labels = Vec::with_capacity(name.num_labels().into());
    for label in name.iter() {
        let mut cased = label.to_vec();
        for b in cased.iter_mut().filter(|b| b.is_ascii_alphabetic()) {
            let upper = bits
                .get(letter / 64)
                .is_some_and(|word| word >> (letter % 64) & 1 == 1);
            *b = if upper {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            };
            letter += 1;
        }
        labels.push(cased);
    }
    let mut cased = Name::from_labels(labels).map_err(|_| WireError::Encode)?;
    cased.set_fqdn(name.is_fqdn());
    Ok(cased)
}

/// A recursive query for (name, rtype) with transaction id `id`.
pub fn build_query(id: u16, name: &Name, rtype: RecordType) -> Result<Vec<u8>, WireError> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_PAYLOAD).set_version(0);
    msg.set_edns(edns);
    msg.to_vec().map_err(|_| WireError::Encode)
}

/// Validates `bytes` as the reply to query (`id`, `name`, `rtype`), its
/// question spelling `name` as `case` says, and extracts what it says.
pub fn parse_response(
    bytes: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    case: CaseMatch,
) -> Result<Parsed, WireError> {
    let msg = Message::from_vec(bytes).map_err(|_| WireError::Malformed)?;
    if msg.id() != id {
        return Err(WireError::IdMismatch);
    }
    if msg.message_type() != MessageType::Response || msg.op_code() != OpCode::Query {
        return Err(WireError::NotResponse);
    }
    match msg.queries() {
        [q] if q.name() == name
            && (case == CaseMatch::Any || q.name().eq_case(name))
            && q.query_type() == rtype
            && q.query_class() == DNSClass::IN => {}
        _ => return Err(WireError::QuestionMismatch),
    }
    if msg.truncated() {
        return Err(WireError::Truncated);
    }
    match msg.response_code() {
        ResponseCode::NoError => answer(&msg, name, rtype),
        ResponseCode::NXDomain => Ok(Parsed {
            outcome: Outcome::NxDomain,
            ttl: negative_ttl(&msg),
        }),
        ResponseCode::ServFail => Err(WireError::ServFail),
        ResponseCode::Refused => Err(WireError::Refused),
        other => Err(WireError::Rcode(u16::from(other))),
    }
}

/// The records for `name` in a NOERROR reply, following CNAMEs.
fn answer(msg: &Message, name: &Name, rtype: RecordType) -> Result<Parsed, WireError> {
    let answers = msg.answers();
    let mut current = name.clone();
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_LINKS {
        let (outcome, min_ttl) = records_for(answers, &current, rtype);
        if let Some(outcome) = outcome {
            return Ok(Parsed {
                outcome,
                ttl: ttl.min(min_ttl),
            });
        }
        let Some((target, cname_ttl)) = cname_of(answers, &current) else {
            if current == *name {
                return Ok(Parsed {
                    outcome: Outcome::NoData,
                    ttl: negative_ttl(msg),
                });
            }
            return Ok(Parsed {
                outcome: Outcome::Alias(current),
                ttl,
            });
        };
        ttl = ttl.min(cname_ttl);
        current = target;
    }
    Err(WireError::CnameChain)
}

/// Records of `rtype` owned by `owner`, and their smallest TTL.
fn records_for(answers: &[Record], owner: &Name, rtype: RecordType) -> (Option<Outcome>, u32) {
    let mut ttl = u32::MAX;
    let mut mx = Vec::new();
    let mut addrs = Vec::new();
    for r in answers.iter().filter(|r| r.name() == owner) {
        match (r.data(), rtype) {
            (RData::MX(m), RecordType::MX) => mx.push(MxRecord {
                preference: m.preference(),
                exchange: m.exchange().to_lowercase(),
            }),
            (RData::A(a), RecordType::A) => addrs.push(IpAddr::V4(a.0)),
            (RData::AAAA(a), RecordType::AAAA) => addrs.push(IpAddr::V6(a.0)),
            _ => continue,
        }
        ttl = ttl.min(r.ttl());
    }
    let outcome = if !mx.is_empty() {
        Some(Outcome::Mx(mx))
    } else if !addrs.is_empty() {
        Some(Outcome::Addrs(addrs))
    } else {
        None
    };
    (outcome, ttl)
}

fn cname_of(answers: &[Record], owner: &Name) -> Option<(Name, u32)> {
    answers.iter().find_map(|r| match r.data() {
        RData::CNAME(c) if r.name() == owner => Some((c.0.to_lowercase(), r.ttl())),
        _ => None,
    })
}

/// RFC 2308 section 5: a negative answer lives for the smaller of the SOA
/// record's TTL and its MINIMUM field; without an SOA it is not cached.
fn negative_ttl(msg: &Message) -> u32 {
    msg.name_servers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
