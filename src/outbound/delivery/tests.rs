//! The delivery decisions on virtual time: no socket, no task, no sleep.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::dsn::Status;

const POLICY: Policy = Policy {
    max_messages_per_connection: 100,
    idle_timeout_ms: 5_000,
    suspend_ms: 30_000,
    max_addresses: 5,
};

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

fn hop(name: &str, addrs: &[u8]) -> Hop {
    Hop {
        name: name.to_owned(),
        addrs: addrs.iter().map(|&n| ip(n)).collect(),
        port: 25,
    }
}

fn at(n: u8) -> SocketAddr {
    SocketAddr::new(ip(n), 25)
}

fn connect(n: u8) -> Step {
    Step::Connect {
        addr: at(n),
        plaintext: false,
    }
}

fn refused() -> Ended {
    Ended::ConnectFailed("connection refused".to_owned())
}

fn defer_reply(step: &Step) -> &ServerReply {
    match step {
        Step::Defer { reply, .. } => reply,
        other => panic!("expected a deferral, got {other:?}"),
    }
}

fn defer_text(step: &Step) -> String {
    String::from_utf8_lossy(&defer_reply(step).text).into_owned()
}

fn status(reply: &ServerReply) -> (u16, Option<(u8, u16, u16)>) {
    let s = reply.status.map(|s| (s.class, s.subject, s.detail));
    (reply.code, s)
}

/// A primary with two addresses and a backup with one.
fn two_hosts() -> (Delivery, Step) {
    let mut d = Delivery::new(POLICY, None);
    let hops = vec![hop("mx1.example", &[2, 3]), hop("mx2.example", &[4])];
    let step = d.resolved(Ok(hops), 1_000);
    (d, step)
}

#[test]
fn hosts_and_addresses_are_tried_in_order_then_the_destination_is_suspended() {
    let (mut d, step) = two_hosts();
    assert_eq!(step, connect(2));
    assert_eq!(d.host(), "mx1.example");
    assert_eq!(d.connection_ended(refused(), true, 1_100), connect(3));
    assert_eq!(d.host(), "mx1.example");
    assert_eq!(d.connection_ended(refused(), true, 1_200), connect(4));
    assert_eq!(d.host(), "mx2.example");
    let busy = ServerReply::local(421, (4, 3, 2), "too busy");
    let step = d.connection_ended(Ended::HostFailed(busy.clone()), true, 1_300);
    assert_eq!(
        step,
        Step::Defer {
            reply: busy,
            suspend_until_ms: 1_300 + POLICY.suspend_ms,
        },
        "the last host's reply is the deferral's reason"
    );
}

#[test]
fn a_connect_failure_names_the_host_and_address() {
    let (mut d, _) = two_hosts();
    d.connection_ended(refused(), true, 0);
    d.connection_ended(refused(), true, 0);
    let step = d.connection_ended(refused(), true, 0);
    let text = defer_text(&step);
    assert_eq!(
        text,
        "connect to mx2.example[127.0.0.4:25]: connection refused"
    );
    assert_eq!(status(defer_reply(&step)), (451, Some((4, 4, 1))));
}

#[test]
fn a_host_that_fails_after_settling_everything_ends_the_run_without_fallback() {
    let (mut d, _) = two_hosts();
    let lost = ServerReply::local(451, (4, 4, 2), "connection lost");
    assert_eq!(
        d.connection_ended(Ended::HostFailed(lost), false, 0),
        Step::Finish { ok: true },
        "nothing in hand: the queue keeps the rest for the next connection"
    );
}

#[test]
fn a_clean_close_finishes_the_run() {
    let (mut d, _) = two_hosts();
    assert_eq!(
        d.connection_ended(Ended::Closed, true, 0),
        Step::Finish { ok: true }
    );
}

#[test]
fn a_failed_handshake_is_retried_in_plaintext_on_the_same_address_when_allowed() {
    let (mut d, _) = two_hosts();
    let failed = Ended::TlsFailed {
        why: "bad certificate".to_owned(),
        plaintext_allowed: true,
    };
    let step = d.connection_ended(failed, true, 0);
    assert_eq!(
        step,
        Step::Connect {
            addr: at(2),
            plaintext: true
        }
    );
    // The next address starts with TLS again.
    assert_eq!(d.connection_ended(refused(), true, 0), connect(3));
}

#[test]
fn a_failed_handshake_under_required_tls_tries_the_next_address() {
    let (mut d, _) = two_hosts();
    let failed = |why: &str| Ended::TlsFailed {
        why: why.to_owned(),
        plaintext_allowed: false,
    };
    assert_eq!(d.connection_ended(failed("expired"), true, 0), connect(3));
    assert_eq!(d.connection_ended(failed("expired"), true, 0), connect(4));
    let step = d.connection_ended(failed("unknown issuer"), true, 0);
    assert_eq!(
        defer_text(&step),
        "TLS handshake with mx2.example[127.0.0.4:25] failed: unknown issuer"
    );
    assert_eq!(status(defer_reply(&step)), (451, Some((4, 7, 10))));
}

#[test]
fn a_connection_the_server_closed_while_idle_is_reopened_to_the_same_address() {
    let (mut d, _) = two_hosts();
    let plaintext = Ended::TlsFailed {
        why: "alert".to_owned(),
        plaintext_allowed: true,
    };
    d.connection_ended(plaintext, true, 0);
    assert_eq!(
        d.connection_ended(Ended::Stale, true, 0),
        Step::Connect {
            addr: at(2),
            plaintext: true
        },
        "same address, same plaintext decision"
    );
}

#[test]
fn no_route_bounces_or_defers() {
    let mut d = Delivery::new(POLICY, None);
    let step = d.resolved(
        Err(NoRoute::Permanent {
            status: Status::new(5, 1, 10).unwrap(),
            reason: "x.example does not accept mail (null MX)".to_owned(),
        }),
        0,
    );
    let Step::Bounce(reply) = step else {
        panic!("a permanent failure bounces: {step:?}");
    };
    assert_eq!(status(&reply), (550, Some((5, 1, 10))));

    let mut d = Delivery::new(POLICY, None);
    let step = d.resolved(Err(NoRoute::Temporary("SERVFAIL".to_owned())), 500);
    assert_eq!(defer_text(&step), "SERVFAIL");
    assert!(matches!(step, Step::Defer { suspend_until_ms, .. } if suspend_until_ms == 30_500));
    assert_eq!(status(defer_reply(&step)), (451, Some((4, 4, 3))));
}

#[test]
fn hosts_without_addresses_defer() {
    let mut d = Delivery::new(POLICY, None);
    let step = d.resolved(Ok(vec![hop("a.example", &[]), hop("b.example", &[])]), 0);
    assert_eq!(defer_text(&step), "no host could be reached");
    let mut d = Delivery::new(POLICY, None);
    let step = d.resolved(Ok(vec![hop("a.example", &[]), hop("b.example", &[7])]), 0);
    assert_eq!(step, connect(7));
    assert_eq!(d.host(), "b.example");
}

#[test]
fn an_idle_connection_looks_for_contention_until_its_idle_timeout() {
    let mut d = Delivery::new(POLICY, None);
    let mut now = 10_000;
    let mut looks = 0;
    while let Some(wake) = d.idle(now, false) {
        assert!(wake > now && wake - now <= CONTENTION_POLL_MS);
        now = wake;
        looks += 1;
    }
    assert_eq!(
        now,
        10_000 + POLICY.idle_timeout_ms,
        "closed at its idle timeout"
    );
    assert_eq!(looks as u64, POLICY.idle_timeout_ms / CONTENTION_POLL_MS);
}

#[test]
fn a_message_taken_restarts_the_idle_timeout() {
    let mut d = Delivery::new(POLICY, None);
    assert!(d.idle(0, false).is_some());
    assert_eq!(d.idle(POLICY.idle_timeout_ms, false), None);
    d.took();
    assert!(d.idle(POLICY.idle_timeout_ms, false).is_some());
}

#[test]
fn an_idle_connection_gives_a_contested_slot_up_at_once() {
    // Another shard waits for the destination's only slot: it must not
    // wait out this connection's idle timeout.
    let mut d = Delivery::new(POLICY, None);
    assert!(d.idle(0, false).is_some());
    assert_eq!(d.idle(CONTENTION_POLL_MS, true), None);
}

#[test]
fn a_busy_connection_hands_a_contested_slot_over_after_its_fair_share() {
    let mut d = Delivery::new(POLICY, None);
    for _ in 0..FAIR_SHARE - 1 {
        assert!(d.may_take(true, false));
        assert!(d.may_pipeline(false, false, true));
        d.settled();
    }
    // The message in flight is the last of its share: nothing goes out
    // behind it while another shard waits.
    assert!(!d.may_pipeline(true, false, true));
    assert!(d.may_pipeline(false, false, true));
    d.settled();
    assert!(!d.may_take(true, false));
    assert!(d.may_take(false, false), "uncontested, it keeps going");
    assert_eq!(d.sent(), FAIR_SHARE);
}

#[test]
fn nothing_is_taken_or_pipelined_once_stopping() {
    let d = Delivery::new(POLICY, None);
    assert!(!d.may_take(false, true));
    assert!(!d.may_pipeline(false, true, true));
    assert!(
        !d.may_pipeline(false, false, false),
        "not when the server cannot pipeline"
    );
}

#[test]
fn a_connection_at_its_message_limit_closes_instead_of_idling() {
    let mut d = Delivery::new(
        Policy {
            max_messages_per_connection: 3,
            ..POLICY
        },
        None,
    );
    for _ in 0..3 {
        assert!(d.idle(0, false).is_some());
        d.took();
        d.settled();
    }
    assert_eq!(d.idle(0, false), None);
}

#[test]
fn the_suspension_is_the_first_retry_step_at_most_a_minute() {
    let mut config = crate::config::Config::embedded_default();
    let shape = config.shape(None);
    let d = &mut config.delivery;
    assert_eq!(
        Policy::of(d, &shape).suspend_ms,
        SUSPEND_MAX_MS,
        "first step 5m"
    );
    d.retry = vec![crate::config::duration::DurationSetting(
        std::time::Duration::from_secs(20),
    )];
    assert_eq!(Policy::of(d, &shape).suspend_ms, 20_000);
    assert_eq!(Policy::of(d, &shape).idle_timeout_ms, 5_000);
}

fn outcome(index: usize, kind: OutcomeKind, code: u16) -> RcptOutcome {
    RcptOutcome {
        index,
        kind,
        reply: ServerReply::local(code, (code as u8 / 100, 0, 0), "r"),
        tls: false,
        tls_failed_then_plaintext: false,
        body_8bit_unannounced: false,
    }
}

#[test]
fn outcomes_are_sorted_by_fate_with_envelope_indexes() {
    let outcomes = [
        outcome(0, OutcomeKind::Delivered, 250),
        outcome(1, OutcomeKind::Failed, 550),
        outcome(2, OutcomeKind::Deferred, 451),
        outcome(3, OutcomeKind::Delivered, 251),
        outcome(4, OutcomeKind::Deferred, 452),
        outcome(9, OutcomeKind::Delivered, 250),
    ];
    let envelope = [10, 11, 12, 13, 14];
    let v = Verdicts::of(&outcomes, |i| envelope.get(i).copied());
    assert_eq!(v.delivered, [10, 13]);
    assert_eq!(v.delivered_reply.map(|r| r.code), Some(250));
    assert_eq!(
        v.failed
            .iter()
            .map(|f| (f.rcpt, f.reply.code))
            .collect::<Vec<_>>(),
        [(11, 550)]
    );
    assert_eq!(v.deferred, [12, 14]);
    assert_eq!(v.deferred_reply.map(|r| r.code), Some(451));
}

#[test]
fn an_unfinished_transaction_keeps_every_recipient_not_decided() {
    let outcomes = [
        outcome(0, OutcomeKind::Deferred, 421),
        outcome(1, OutcomeKind::Failed, 550),
        outcome(2, OutcomeKind::Deferred, 451),
    ];
    let v = Verdicts::of_unfinished(&outcomes, |i| Some(i as u32));
    assert!(v.delivered.is_empty() && v.delivered_reply.is_none());
    assert_eq!(
        v.deferred,
        [0, 2],
        "in transaction order, for the next host"
    );
    assert_eq!(v.failed.len(), 1);
}

#[test]
fn an_lmtp_recipient_delivered_before_the_host_failed_stays_delivered() {
    // An LMTP server's per-recipient replies: the first came, then the
    // connection was lost. Trying it again would deliver it twice.
    let outcomes = [
        outcome(0, OutcomeKind::Delivered, 250),
        outcome(1, OutcomeKind::Deferred, 451),
    ];
    let v = Verdicts::of_unfinished(&outcomes, |i| Some(i as u32));
    assert_eq!(v.delivered, [0]);
    assert_eq!(v.deferred, [1]);
}

#[test]
fn a_source_skips_addresses_of_the_other_family() {
    let v6: IpAddr = "2001:db8::25".parse().unwrap();
    let mut hop6 = hop("mx1.example", &[]);
    hop6.addrs = vec![v6];
    let hops = vec![hop6, hop("mx2.example", &[5])];
    let mut d = Delivery::new(POLICY, Some(ip(9)));
    assert_eq!(d.resolved(Ok(hops.clone()), 0), connect(5));
    assert_eq!(d.host(), "mx2.example");
    // Without a bound source, every address is tried in order.
    let mut d = Delivery::new(POLICY, None);
    assert_eq!(
        d.resolved(Ok(hops), 0),
        Step::Connect {
            addr: SocketAddr::new(v6, 25),
            plaintext: false
        }
    );
}

#[test]
fn a_destination_the_source_cannot_reach_goes_to_another_source_saying_why() {
    let v6: IpAddr = "2001:db8::25".parse().unwrap();
    let mut hop6 = hop("mx.example", &[]);
    hop6.addrs = vec![v6];
    let mut d = Delivery::new(POLICY, Some(ip(9)));
    let step = d.resolved(Ok(vec![hop6]), 0);
    let Step::OtherSource { reply, .. } = &step else {
        panic!("another source of the pool should take it: {step:?}");
    };
    assert_eq!(status(reply), (451, Some((4, 4, 4))));
    let text = String::from_utf8_lossy(&reply.text);
    assert!(text.contains("only IPv6"), "{text}");
}

#[test]
fn a_rate_token_is_waited_for_on_the_connection_only_within_an_idle_wait() {
    let plan = Delivery::new(POLICY, None);
    let idle = POLICY.idle_timeout_ms;
    assert!(plan.waits_for_token(1_000, 1_000), "free now");
    assert!(plan.waits_for_token(1_000, 1_000 + idle));
    assert!(
        !plan.waits_for_token(1_000, 1_001 + idle),
        "longer: the queue waits, not the connection"
    );
    assert!(plan.waits_for_token(5_000, 1_000), "already past");
}

#[test]
fn a_run_tries_at_most_max_addresses_over_all_hosts_then_defers_saying_so() {
    let policy = Policy {
        max_addresses: 3,
        ..POLICY
    };
    let mut d = Delivery::new(policy, None);
    let hops = vec![hop("mx1.example", &[2, 3]), hop("mx2.example", &[4, 5])];
    assert_eq!(d.resolved(Ok(hops), 0), connect(2));
    assert_eq!(d.connection_ended(refused(), true, 10), connect(3));
    // A reconnection to the same address is not another address.
    assert_eq!(d.connection_ended(Ended::Stale, true, 20), connect(3));
    assert_eq!(d.connection_ended(refused(), true, 30), connect(4));
    assert_eq!(d.host(), "mx2.example");
    let step = d.connection_ended(refused(), true, 40);
    let text = defer_text(&step);
    assert!(
        text.contains("tried 3 of the mail exchangers' addresses"),
        "{text}"
    );
    assert!(text.contains("max_mx_addresses"), "{text}");
    assert!(text.contains("127.0.0.4:25]: connection refused"), "{text}");
    assert_eq!(status(defer_reply(&step)), (451, Some((4, 4, 1))));
}

#[test]
fn addresses_of_the_other_family_do_not_count_against_the_limit() {
    let policy = Policy {
        max_addresses: 1,
        ..POLICY
    };
    let mut d = Delivery::new(policy, Some(ip(1)));
    let mut six = hop("mx1.example", &[]);
    six.addrs.push("2001:db8::1".parse().unwrap());
    let hops = vec![six, hop("mx2.example", &[4, 5])];
    assert_eq!(d.resolved(Ok(hops), 0), connect(4));
    let step = d.connection_ended(refused(), true, 10);
    assert!(defer_text(&step).contains("tried 1 of"));
}
