//! Fuzzing harness for the DNS wire parser, shared by the cargo-fuzz
//! target `dns_response` (a thin shim) and the unit tests, so it builds
//! and runs on stable.
//!
//! Must never: be used by the daemon; it panics on purpose when an
//! invariant breaks, which is how a fuzzer reports a finding.

use hickory_proto::rr::{Name, RecordType};

use super::wire::{parse_response, CaseMatch, Outcome};

/// The types petrel asks for.
const TYPES: [RecordType; 3] = [RecordType::MX, RecordType::A, RecordType::AAAA];

/// A response header and question for `example.com` of `rtype`, with
/// `id` and `answers` answer records announced: what the fuzzer's bytes
/// are appended to, so they reach the answer section.
fn prefix(id: u16, rtype: RecordType, answers: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, answers, 0, 0, 0, 0]);
    m.extend_from_slice(b"\x07example\x03com\x00");
    m.extend_from_slice(&u16::from(rtype).to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// Parses `data` as a reply (whole, and after a valid header and
/// question) for every type petrel asks for: never a panic, and what it
/// accepts is within what the bytes could hold.
pub fn dns_response(data: &[u8]) {
    let Ok(name) = Name::from_ascii("example.com.") else {
        return;
    };
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    for rtype in TYPES {
        check(data, id, &name, rtype);
        // The first byte says how many answers follow.
        let answers = data.first().map_or(1, |b| b % 8);
        let mut msg = prefix(0x5eed, rtype, answers);
        msg.extend_from_slice(data.get(1..).unwrap_or(&[]));
        check(&msg, 0x5eed, &name, rtype);
    }
}

fn check(msg: &[u8], id: u16, name: &Name, rtype: RecordType) {
    let Ok(parsed) = parse_response(msg, id, name, rtype, CaseMatch::Exact) else {
        return;
    };
    // Each record takes at least 11 bytes of the message.
    let most = msg.len() / 11;
    match parsed.outcome {
        Outcome::Mx(mx) => assert!(!mx.is_empty() && mx.len() <= most),
        Outcome::Addrs(a) => assert!(!a.is_empty() && a.len() <= most),
        Outcome::Alias(_) | Outcome::NoData | Outcome::NxDomain => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_runs_over_seeded_inputs() {
        let mut rng = crate::dns::XorShift::new(0xD15);
        for round in 0..300 {
            let len = (rng.next_u64() % 200) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if round % 3 == 0 {
                // A well-formed MX answer now and then: a pointer to the
                // question's name, type MX, class IN, a TTL, and a target.
                data = vec![1];
                data.extend_from_slice(&[0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 1, 0, 0, 9, 0, 10]);
                data.extend_from_slice(b"\x02mx\xc0\x0c");
                data.truncate(1 + round % 23);
            }
            dns_response(&data);
        }
    }
}
