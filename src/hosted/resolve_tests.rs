use std::path::Path;

use super::*;
use crate::config::Verify;
use crate::hosted::tests::config;
use crate::hosted::{AliasTable, Hosted};
use crate::smtp::recipients::{Refusal, Resolution};

const SECRET: &[u8] = b"a secret for the tests";

/// example.org (users alice, bob; catch-all optional) and example.net
/// (LMTP-verified), with `aliases`.
fn tables(aliases: &str, catch_all: Option<&str>) -> Recipients {
    let mut org = config("example.org");
    let mut net = config("example.net").domain[0].clone();
    net.verify = Verify::Lmtp;
    org.domain.push(net.clone());
    let mut d = org.domain[0].clone();
    d.verify = Verify::Users;
    d.catch_all = catch_all.map(str::to_owned);
    let aliases = AliasTable::parse(Path::new("aliases"), aliases, &org).expect("aliases");
    Recipients {
        domains: vec![
            Hosted {
                section: d,
                users: ["alice".to_owned(), "bob".to_owned()].into(),
            },
            Hosted {
                section: net,
                users: Default::default(),
            },
        ],
        aliases,
        srs: Some(Srs::new(SECRET, "fwd.example.org")),
    }
}

fn resolve(
    r: &Recipients,
    answers: &[(String, bool)],
    address: &str,
) -> Result<(Resolution, Vec<(String, bool)>), Refusal> {
    let mut out = Vec::new();
    let l = Lookup {
        tables: r,
        today: 100,
        answers,
    };
    let res = l.resolve(address, &mut out)?;
    let got = out
        .into_iter()
        .map(|t| (String::from_utf8(t.address).expect("utf8"), t.forward))
        .collect();
    Ok((res, got))
}

fn targets(r: &Recipients, address: &str) -> Vec<(String, bool)> {
    match resolve(r, &[], address) {
        Ok((Resolution::Resolved, t)) => t,
        other => panic!("{address}: {other:?}"),
    }
}

#[test]
fn users_sub_addresses_and_case() {
    let r = tables("", None);
    assert_eq!(
        targets(&r, "Alice+News@Example.ORG"),
        [("alice@example.org".to_owned(), false)]
    );
    assert_eq!(
        resolve(&r, &[], "carol@example.org"),
        Err(Refusal::Unknown {
            address: "carol@example.org".into()
        })
    );
    assert_eq!(
        resolve(&r, &[], "x@elsewhere.test").map(|x| x.0),
        Ok(Resolution::NotHosted)
    );
}

#[test]
fn smtputf8_local_parts_are_not_folded_beyond_ascii() {
    let mut r = tables("", None);
    r.domains[0].users.insert("JÖRG".to_ascii_lowercase());
    // ASCII letters fold, the non-ASCII one stays as it came.
    assert_eq!(
        targets(&r, "JÖRG@example.org"),
        [("jÖrg@example.org".to_owned(), false)]
    );
    assert!(resolve(&r, &[], "jörg@example.org").is_err());
}

#[test]
fn aliases_expand_to_local_and_remote_and_win_over_users() {
    let r = tables(
        "sales@example.org: Alice@example.org, bob@partner.test, team@example.org\n\
         team@example.org: bob@example.org, alice+x@example.org\n\
         alice@example.org: carol@partner.test\n",
        None,
    );
    let t = targets(&r, "Sales+q@example.org");
    assert_eq!(
        t,
        [
            ("carol@partner.test".to_owned(), true),
            ("bob@partner.test".to_owned(), true),
            ("bob@example.org".to_owned(), false),
        ]
    );
}

#[test]
fn cycles_and_depth_are_refused() {
    let r = tables(
        "a@example.org: b@example.org\nb@example.org: c@example.org, alice@example.org\nc@example.org: A@example.org\n",
        None,
    );
    assert!(matches!(
        resolve(&r, &[], "a@example.org"),
        Err(Refusal::Loop { .. })
    ));
    // A diamond is not a loop: the shared target is kept once.
    let r = tables(
        "a@example.org: b@example.org, c@example.org\nb@example.org: alice@example.org\nc@example.org: alice@example.org\n",
        None,
    );
    assert_eq!(
        targets(&r, "a@example.org"),
        [("alice@example.org".to_owned(), false)]
    );
    let chain: String = (0..=MAX_ALIAS_DEPTH)
        .map(|i| format!("l{i}@example.org: l{}@example.org\n", i + 1))
        .collect();
    let r = tables(
        &format!(
            "{chain}l{}@example.org: alice@example.org\n",
            MAX_ALIAS_DEPTH + 1
        ),
        None,
    );
    // l0 .. l9 are ten aliases within each other; l2 .. l9 are eight.
    assert_eq!(resolve(&r, &[], "l1@example.org"), Err(Refusal::TooDeep));
    assert!(
        resolve(&r, &[], "l2@example.org").is_ok(),
        "one level less is fine"
    );
    // Fan-out: 10 aliases of 10 of 10 ... names more than the limit.
    let mut wide = String::new();
    for level in 0..4 {
        for i in 0..10 {
            let targets: Vec<String> = (0..10)
                .map(|j| format!("w{}x{j}@example.org", level + 1))
                .collect();
            wide.push_str(&format!(
                "w{level}x{i}@example.org: {}\n",
                targets.join(", ")
            ));
        }
    }
    let mut wide_tail = wide.clone();
    for j in 0..10 {
        wide_tail.push_str(&format!("w4x{j}@example.org: alice@example.org\n"));
    }
    let r = tables(&wide_tail, None);
    assert_eq!(resolve(&r, &[], "w0x0@example.org"), Err(Refusal::TooDeep));
}

#[test]
fn unknown_local_targets_refuse_and_catch_all_takes_unknowns() {
    let r = tables(
        "list@example.org: alice@example.org, gone@example.org\n",
        None,
    );
    assert_eq!(
        resolve(&r, &[], "list@example.org"),
        Err(Refusal::Unknown {
            address: "gone@example.org".into()
        })
    );
    let r = tables("", Some("bob@example.org"));
    assert_eq!(
        targets(&r, "nobody@example.org"),
        [("bob@example.org".to_owned(), false)]
    );
    let r = tables("", Some("ghost@example.org"));
    assert!(matches!(
        resolve(&r, &[], "nobody@example.org"),
        Err(Refusal::Unknown { .. })
    ));
}

#[test]
fn lmtp_domains_ask_once_per_mailbox() {
    let r = tables("both@example.org: u@example.net, V+tag@example.net\n", None);
    let first = resolve(&r, &[], "both@example.org").expect("probe");
    assert_eq!(
        first.0,
        Resolution::NeedsProbe {
            mailbox: "u@example.net".into()
        }
    );
    let answers = vec![("u@example.net".to_owned(), true)];
    let second = resolve(&r, &answers, "both@example.org").expect("probe");
    assert_eq!(
        second.0,
        Resolution::NeedsProbe {
            mailbox: "v@example.net".into()
        }
    );
    let mut answers = answers;
    answers.push(("v@example.net".to_owned(), true));
    let (res, t) = resolve(&r, &answers, "both@example.org").expect("resolved");
    assert_eq!(res, Resolution::Resolved);
    assert_eq!(t.len(), 2);
    answers[1].1 = false;
    assert!(matches!(
        resolve(&r, &answers, "both@example.org"),
        Err(Refusal::Unknown { .. })
    ));
}

#[test]
fn rewritten_senders_come_home() {
    let r = tables("", None);
    let srs = r.srs.as_ref().expect("srs");
    let fwd = String::from_utf8(srs.forward(b"orig@sender.test", 99).expect("rw")).expect("utf8");
    assert_eq!(targets(&r, &fwd), [("orig@sender.test".to_owned(), false)]);
    let tampered = fwd.replace("orig@", "evil@").replacen("orig", "evil", 1);
    assert!(matches!(
        resolve(&r, &[], &tampered),
        Err(Refusal::BadSrs { .. })
    ));
    assert!(matches!(
        resolve(&r, &[], "someone@fwd.example.org"),
        Err(Refusal::Unknown { .. })
    ));
    // A bounce home to a sender of ours reaches its mailbox.
    let home = String::from_utf8(srs.forward(b"Bob+x@Example.org", 99).expect("rw")).expect("utf8");
    assert_eq!(targets(&r, &home), [("bob@example.org".to_owned(), false)]);
}

#[test]
fn forwards_rewrite_the_sender_but_not_the_null_one_and_keep_keeps_it() {
    use crate::smtp::recipients::RecipientTable;
    let mut r = tables("", None);
    let rewritten = r.forward_sender(b"orig@sender.test", 5).expect("srs");
    assert!(rewritten.starts_with(b"SRS0=") && rewritten.ends_with(b"@fwd.example.org"));
    assert_eq!(r.forward_sender(b"", 5), None, "the null sender stays null");
    r.srs = None; // forward_sender = "keep"
    assert_eq!(r.forward_sender(b"orig@sender.test", 5), None);
}
