use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn n(s: &str) -> Name {
    parse_name(s).unwrap()
}

fn reply_to(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(n(name), rtype));
    m
}

fn rec(name: &str, ttl: u32, data: RData) -> Record {
    Record::from_rdata(n(name), ttl, data)
}

fn soa(ttl: u32, minimum: u32) -> Record {
    let data = SOA::new(
        n("ns.test"),
        n("hostmaster.test"),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    rec("test", ttl, RData::SOA(data))
}

fn parse(m: &Message, id: u16, name: &str, rtype: RecordType) -> Result<Parsed, WireError> {
    parse_response(&m.to_vec().unwrap(), id, &n(name), rtype, CaseMatch::Exact)
}

#[test]
fn query_has_rd_edns_and_the_question() {
    let bytes = build_query(0x1234, &n("Example.TEST"), RecordType::MX).unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.id(), 0x1234);
    assert_eq!(m.message_type(), MessageType::Query);
    assert!(m.recursion_desired());
    assert_eq!(m.queries().len(), 1);
    assert_eq!(m.queries()[0].name().to_ascii(), "example.test.");
    assert_eq!(m.queries()[0].query_type(), RecordType::MX);
    let edns = m.extensions().as_ref().expect("EDNS0 present");
    assert_eq!(edns.max_payload(), EDNS_UDP_PAYLOAD);
    assert_eq!(edns.version(), 0);
}

#[test]
fn parse_name_rejects_junk() {
    assert_eq!(n("A.Example.test").to_ascii(), "a.example.test.");
    assert_eq!(n("example.test.").to_ascii(), "example.test.");
    assert_eq!(
        n("MX.Bücher.example").to_ascii(),
        "mx.xn--bcher-kva.example."
    );
    assert!(matches!(
        parse_name("\u{301}x.example"),
        Err(crate::dns::DnsError::InvalidIdn(_))
    ));
    for bad in [
        "",
        ".",
        ".x.test",
        "a..b",
        &"a".repeat(300),
        &format!("{}.test", "a".repeat(64)),
    ] {
        assert!(parse_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn mx_answer_with_min_ttl() {
    let mut m = reply_to(7, "example.test", RecordType::MX);
    m.add_answer(rec(
        "example.test",
        300,
        RData::MX(MX::new(10, n("MX1.example.test"))),
    ));
    m.add_answer(rec(
        "example.test",
        100,
        RData::MX(MX::new(20, n("mx2.example.test"))),
    ));
    let p = parse(&m, 7, "EXAMPLE.test", RecordType::MX).unwrap();
    assert_eq!(p.ttl, 100);
    let Outcome::Mx(records) = p.outcome else {
        panic!("expected MX records");
    };
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].exchange, n("mx1.example.test"));
}

#[test]
fn id_question_and_type_must_match() {
    let m = reply_to(7, "example.test", RecordType::MX);
    assert_eq!(
        parse(&m, 8, "example.test", RecordType::MX),
        Err(WireError::IdMismatch)
    );
    assert_eq!(
        parse(&m, 7, "other.test", RecordType::MX),
        Err(WireError::QuestionMismatch)
    );
    assert_eq!(
        parse(&m, 7, "example.test", RecordType::A),
        Err(WireError::QuestionMismatch)
    );
    let mut q = m.clone();
    q.set_message_type(MessageType::Query);
    assert_eq!(
        parse(&q, 7, "example.test", RecordType::MX),
        Err(WireError::NotResponse)
    );
    let mut none = m.clone();
    none.take_queries();
    assert_eq!(
        parse(&none, 7, "example.test", RecordType::MX),
        Err(WireError::QuestionMismatch)
    );
}

#[test]
fn truncated_and_error_codes() {
    let mut m = reply_to(1, "x.test", RecordType::A);
    m.set_truncated(true);
    assert_eq!(
        parse(&m, 1, "x.test", RecordType::A),
        Err(WireError::Truncated)
    );
    let cases = [
        (ResponseCode::ServFail, WireError::ServFail),
        (ResponseCode::Refused, WireError::Refused),
        (ResponseCode::FormErr, WireError::Rcode(1)),
    ];
    for (code, want) in cases {
        let mut m = reply_to(1, "x.test", RecordType::A);
        m.set_response_code(code);
        assert_eq!(parse(&m, 1, "x.test", RecordType::A), Err(want));
    }
}

#[test]
fn negative_answers_take_the_soa_minimum() {
    let mut m = reply_to(1, "x.test", RecordType::A);
    m.set_response_code(ResponseCode::NXDomain);
    m.add_name_server(soa(900, 60));
    let p = parse(&m, 1, "x.test", RecordType::A).unwrap();
    assert_eq!(
        p,
        Parsed {
            outcome: Outcome::NxDomain,
            ttl: 60
        }
    );
    let mut m = reply_to(1, "x.test", RecordType::A);
    m.add_name_server(soa(30, 60));
    assert_eq!(
        parse(&m, 1, "x.test", RecordType::A).unwrap(),
        Parsed {
            outcome: Outcome::NoData,
            ttl: 30
        }
    );
    // Without an SOA a negative answer is not cacheable.
    let m = reply_to(1, "x.test", RecordType::A);
    assert_eq!(parse(&m, 1, "x.test", RecordType::A).unwrap().ttl, 0);
}

#[test]
fn cname_chains_are_followed_and_bounded() {
    let mut m = reply_to(1, "www.test", RecordType::AAAA);
    m.add_answer(rec("www.test", 50, RData::CNAME(CNAME(n("web.test")))));
    m.add_answer(rec("web.test", 500, RData::CNAME(CNAME(n("host.test")))));
    m.add_answer(rec(
        "host.test",
        400,
        RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
    ));
    m.add_answer(rec("other.test", 1, RData::A(A(Ipv4Addr::LOCALHOST))));
    let p = parse(&m, 1, "www.test", RecordType::AAAA).unwrap();
    assert_eq!(
        p,
        Parsed {
            outcome: Outcome::Addrs(vec![Ipv6Addr::LOCALHOST.into()]),
            ttl: 50
        }
    );

    let mut m = reply_to(1, "www.test", RecordType::A);
    m.add_answer(rec(
        "www.test",
        50,
        RData::CNAME(CNAME(n("elsewhere.test"))),
    ));
    let p = parse(&m, 1, "www.test", RecordType::A).unwrap();
    assert_eq!(p.outcome, Outcome::Alias(n("elsewhere.test")));

    let mut m = reply_to(1, "loop.test", RecordType::A);
    m.add_answer(rec("loop.test", 50, RData::CNAME(CNAME(n("loop.test")))));
    assert_eq!(
        parse(&m, 1, "loop.test", RecordType::A),
        Err(WireError::CnameChain)
    );
}

#[test]
fn records_of_other_types_or_owners_are_ignored() {
    let mut m = reply_to(1, "x.test", RecordType::A);
    m.add_answer(rec("x.test", 50, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
    m.add_answer(rec("y.test", 50, RData::A(A(Ipv4Addr::LOCALHOST))));
    assert_eq!(
        parse(&m, 1, "x.test", RecordType::A).unwrap().outcome,
        Outcome::NoData
    );
}

#[test]
fn garbage_never_panics() {
    let name = Name::from_str("x.test.").unwrap();
    assert_eq!(
        parse_response(&[], 1, &name, RecordType::A, CaseMatch::Exact),
        Err(WireError::Malformed)
    );
    let good = reply_to(1, "x.test", RecordType::A).to_vec().unwrap();
    for len in 0..good.len() {
        let _ = parse_response(&good[..len], 1, &name, RecordType::A, CaseMatch::Exact);
    }
    let mut state = 1u32;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..40)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        let _ = parse_response(&bytes, 1, &name, RecordType::A, CaseMatch::Exact);
    }
}

#[test]
fn case_bits_set_letters_only_and_a_reply_must_echo_them() {
    let asked = with_case(&n("ab-1.x.test"), &[0b1_0101]).unwrap();
    assert_eq!(asked.to_ascii(), "Ab-1.X.tEst.");
    assert_eq!(letters(&n("ab-1.x.test")), 7);
    // Letters past the bits given stay lower case.
    assert_eq!(
        with_case(&n("abc.test"), &[]).unwrap().to_ascii(),
        "abc.test."
    );
    let bytes = build_query(9, &asked, RecordType::A).unwrap();
    let question = Message::from_vec(&bytes).unwrap().queries()[0].clone();
    assert!(
        question.name().eq_case(&asked),
        "the query carries the case"
    );
    let mut echoed = reply_to(9, "x.test", RecordType::A);
    echoed.queries_mut()[0] = question;
    let echoed = echoed.to_vec().unwrap();
    let lower = reply_to(9, "ab-1.x.test", RecordType::A).to_vec().unwrap();
    let exact = |reply: &[u8]| parse_response(reply, 9, &asked, RecordType::A, CaseMatch::Exact);
    assert!(exact(&echoed).is_ok());
    // A reply whose question is in other case is a stray datagram.
    assert_eq!(exact(&lower), Err(WireError::QuestionMismatch));
    let any = parse_response(&lower, 9, &asked, RecordType::A, CaseMatch::Any);
    assert!(any.is_ok(), "without 0x20 case does not matter");
}
