use std::net::IpAddr;

use hickory_proto::rr::Name;

use super::*;
use crate::dns::parse_name;

fn rec(preference: u16, exchange: &str) -> MxRecord {
    let exchange = if exchange == "." {
        Name::root()
    } else {
        parse_name(exchange).unwrap()
    };
    MxRecord {
        preference,
        exchange,
    }
}

fn names(plan: &MxPlan) -> Vec<(u16, String)> {
    let MxPlan::Hosts(hosts) = plan else {
        panic!("expected hosts, got {plan:?}");
    };
    hosts
        .iter()
        .map(|h| (h.preference, h.name.clone()))
        .collect()
}

#[test]
fn sorted_by_preference_and_deduplicated() {
    let answer = MxAnswer::Records(vec![
        rec(20, "b.test"),
        rec(5, "A.test"),
        rec(30, "a.test"),
        rec(10, "c.test"),
    ]);
    let got = names(&mx_plan("x.test", &answer, 1));
    let want = [(5, "a.test"), (10, "c.test"), (20, "b.test")];
    assert_eq!(got, want.map(|(p, n)| (p, n.to_string())));
}

#[test]
fn equal_preferences_are_shuffled_by_seed() {
    let hosts: Vec<MxRecord> = (0..8)
        .map(|i| rec(10, &format!("h{i}.test")))
        .chain([rec(5, "first.test")])
        .collect();
    let answer = MxAnswer::Records(hosts);
    let orders: Vec<Vec<(u16, String)>> = (0..20)
        .map(|seed| names(&mx_plan("x.test", &answer, seed)))
        .collect();
    assert!(orders
        .iter()
        .all(|o| o[0] == (5, "first.test".to_string()) && o.len() == 9));
    assert_eq!(orders[3], names(&mx_plan("x.test", &answer, 3)));
    let distinct: std::collections::HashSet<_> = orders.iter().collect();
    assert!(distinct.len() > 10, "seeds should give varied orders");
}

#[test]
fn null_mx_nodata_and_nxdomain() {
    assert_eq!(
        mx_plan("x.test", &MxAnswer::Records(vec![rec(0, ".")]), 0),
        MxPlan::NullMx
    );
    assert_eq!(
        mx_plan("x.test", &MxAnswer::NxDomain, 0),
        MxPlan::NoSuchDomain
    );
    let implicit = mx_plan("X.test.", &MxAnswer::NoData, 0);
    let MxPlan::Hosts(hosts) = &implicit else {
        panic!("implicit MX expected");
    };
    assert_eq!(hosts[0].name, "x.test");
    assert_eq!(hosts[0].kind, HostKind::Implicit);
    // A root target next to real ones is skipped, not a null MX.
    let mixed = MxAnswer::Records(vec![rec(0, "."), rec(10, "mx.test")]);
    assert_eq!(
        names(&mx_plan("x.test", &mixed, 0)),
        vec![(10, "mx.test".to_string())]
    );
}

#[test]
fn address_literals() {
    assert_eq!(address_literal("example.test"), None);
    assert_eq!(
        address_literal("[192.0.2.1]"),
        Some(Ok(IpAddr::from([192, 0, 2, 1])))
    );
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(address_literal("[IPv6:2001:db8::1]"), Some(Ok(v6)));
    assert_eq!(address_literal("[ipv6:2001:db8::1]"), Some(Ok(v6)));
    for bad in [
        "[",
        "[]",
        "[1.2.3]",
        "[2001:db8::1]",
        "[IPv6:1.2.3.4]",
        "[1.2.3.4",
        "[IPv6:]",
        "[é]",
    ] {
        assert!(matches!(address_literal(bad), Some(Err(_))), "{bad}");
    }
    let plan = literal_plan("[192.0.2.1]", IpAddr::from([192, 0, 2, 1]));
    assert!(
        matches!(plan, MxPlan::Hosts(h) if h[0].kind == HostKind::Literal && h[0].addrs.len() == 1)
    );
}

#[test]
fn plan_keeps_the_best_hosts_up_to_the_bound() {
    let records = (0..30u16)
        .rev()
        .map(|i| rec(i, &format!("h{i:02}.test")))
        .collect();
    let got = names(&mx_plan("x.test", &MxAnswer::Records(records), 0));
    assert_eq!(got.len(), MAX_MX_HOSTS);
    assert_eq!(got[0], (0, "h00.test".to_string()));
    assert_eq!(got.last(), Some(&(19, "h19.test".to_string())));
}
