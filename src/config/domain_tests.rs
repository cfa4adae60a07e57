//! `[[domain]]` and `[aliases]`: defaults, the printed form, rejected
//! values and conflicts.

use std::path::Path;

use super::domain::{ForwardSender, LmtpTarget, LocalDelivery, Verify};
use super::tests::{assert_error, parse};

const LMTP: &str =
    "[[domain]]\nname = \"Example.ORG\"\ndelivery = \"lmtp\"\nlmtp = \"unix:/run/dovecot/lmtp\"\n";
const MAILDIR: &str = "[[domain]]\nname = \"example.net\"\ndelivery = \"maildir\"\nmaildir_root = \"/var/mail/vhosts/example.net\"\nusers_file = \"/etc/petrel/users\"\n";

#[test]
fn domains_get_their_defaults_and_print_back() {
    let config = parse(&format!("{LMTP}{MAILDIR}"));
    let lmtp = &config.domain[0];
    assert_eq!(lmtp.name, "example.org");
    assert_eq!(lmtp.delivery, LocalDelivery::Lmtp);
    assert_eq!(
        lmtp.lmtp,
        Some(LmtpTarget::Unix("/run/dovecot/lmtp".into()))
    );
    // An LMTP domain without users asks its server.
    assert_eq!(lmtp.verify, Verify::Lmtp);
    assert_eq!(lmtp.recipient_delimiter, "+");
    assert!(!lmtp.case_sensitive);
    assert_eq!(lmtp.verify_cache.0.as_secs(), 60);
    let maildir = &config.domain[1];
    assert_eq!(maildir.verify, Verify::Users);
    assert_eq!(maildir.maildir_mode, 0o600);
    assert_eq!(maildir.maildir_owner, "");
    assert!(config.hosted_domain("EXAMPLE.net.").is_some());
    assert!(config.hosted_domain("sub.example.net").is_none());
    assert!(config.aliases.is_default());
    assert_eq!(
        config.aliases.srs_domain("mx.example.test"),
        "mx.example.test"
    );

    let full = format!(
        "{MAILDIR}maildir_mode = \"0660\"\nmaildir_owner = \"vmail:mail\"\nusers = [\"alice\", \"Bob\"]\ncatch_all = \"postmaster@example.net\"\nrecipient_delimiter = \"+-\"\ncase_sensitive = true\n\
         [[domain]]\nname = \"example.com\"\ndelivery = \"lmtp\"\nlmtp = \"127.0.0.1\"\nverify = \"none\"\nverify_cache = \"5m\"\n\
         [aliases]\nfile = \"/etc/petrel/aliases\"\nforward_sender = \"keep\"\nsrs_domain = \"Fwd.Example.net\"\nsrs_secret_file = \"/etc/petrel/srs\"\n"
    );
    let config = parse(&full);
    let maildir = &config.domain[0];
    assert_eq!(maildir.maildir_mode, 0o660);
    assert_eq!(maildir.users, ["alice", "Bob"]);
    assert_eq!(maildir.catch_all.as_deref(), Some("postmaster@example.net"));
    assert!(maildir.same_local_part("Bob", "Bob") && !maildir.same_local_part("Bob", "bob"));
    let tcp = &config.domain[1];
    assert_eq!(tcp.lmtp.as_ref().unwrap().to_string(), "127.0.0.1:24");
    assert_eq!(tcp.verify, Verify::None);
    assert_eq!(
        config.aliases.file.as_deref(),
        Some(Path::new("/etc/petrel/aliases"))
    );
    assert_eq!(config.aliases.forward_sender, ForwardSender::Keep);
    assert_eq!(config.aliases.srs_domain("ignored"), "fwd.example.net");
    let printed = config.to_toml_string().unwrap();
    assert!(printed.contains("maildir_mode = \"0660\""), "{printed}");
    assert_eq!(parse(&printed), config);
    let plain = parse("").to_toml_string().unwrap();
    assert!(
        !plain.contains("domain") && !plain.contains("aliases"),
        "{plain}"
    );
}

#[test]
fn bad_domains_are_refused_at_their_place() {
    assert_error(&format!("{LMTP}{LMTP}"), "6:8", "already hosted");
    assert_error(
        &LMTP.replace("\"lmtp\"\nlmtp", "\"mbox\"\nlmtp"),
        "3:12",
        "\"maildir\" or \"lmtp\"",
    );
    assert_error(
        "[[domain]]\nname = \"example.org\"\ndelivery = \"lmtp\"\n",
        "3:12",
        "needs lmtp",
    );
    assert_error(
        "[[domain]]\nname = \"example.org\"\ndelivery = \"maildir\"\nmaildir_root = \"/m\"\n",
        "3:12",
        "needs its users",
    );
    assert_error(
        &format!("{MAILDIR}verify = \"lmtp\"\n"),
        "6:10",
        "needs delivery = \"lmtp\"",
    );
    assert_error(
        &LMTP.replace("unix:/run/dovecot/lmtp", "unix:run/lmtp"),
        "4:8",
        "must be absolute",
    );
    assert_error(
        &LMTP.replace("unix:/run/dovecot/lmtp", "127.0.0.1:99999"),
        "4:8",
        "not between 1 and 65535",
    );
    assert_error(
        &format!("{MAILDIR}maildir_mode = \"0400\"\n"),
        "6:16",
        "read and write",
    );
    assert_error(
        &format!("{MAILDIR}maildir_mode = \"rw\"\n"),
        "6:16",
        "permission mode",
    );
    assert_error(
        &format!("{MAILDIR}maildir_owner = \"a b\"\n"),
        "6:17",
        "user:group",
    );
    assert_error(
        &format!("{MAILDIR}users = [\"a@b\"]\n"),
        "6:10",
        "not a local part",
    );
    assert_error(
        &format!("{MAILDIR}catch_all = \"nobody\"\n"),
        "6:13",
        "not a mailbox",
    );
    assert_error(
        &format!("{MAILDIR}recipient_delimiter = \"@\"\n"),
        "6:23",
        "may not contain",
    );
    assert_error(
        &format!("{MAILDIR}colour = \"red\"\n"),
        "6:1",
        "unknown field",
    );
    assert_error(
        "[aliases]\nforward_sender = \"rewrite\"\n",
        "2:18",
        "\"srs\" or \"keep\"",
    );
}

#[test]
fn a_hosted_domain_cannot_also_be_routed() {
    assert_error(
        &format!("[[route]]\ndomain = \".org\"\nrelay = \"192.0.2.1\"\n{LMTP}"),
        "5:8",
        "[[route]] for \".org\"",
    );
    assert_error(
        &format!("[[route]]\ndomain = \"example.org\"\nrelay = \"192.0.2.1\"\n{LMTP}"),
        "5:8",
        "remove one of them",
    );
    // The route for every other domain is how mail leaves a server that
    // hosts some: no conflict.
    let config = parse(&format!(
        "[[route]]\ndomain = \"*\"\nrelay = \"192.0.2.1\"\n{LMTP}"
    ));
    assert_eq!(config.domain.len(), 1);
}

#[test]
fn a_local_part_names_its_user() {
    let config = parse(&format!(
        "{LMTP}{MAILDIR}recipient_delimiter = \"+-\"\ncase_sensitive = true\n"
    ));
    let (lmtp, maildir) = (&config.domain[0], &config.domain[1]);
    assert_eq!(lmtp.user_of("Alice+News"), "alice");
    assert_eq!(lmtp.user_of("alice"), "alice");
    // A leading delimiter is the user's name, not an empty user's tag.
    assert_eq!(lmtp.user_of("+alice"), "+alice");
    assert_eq!(lmtp.user_of("a-b"), "a-b");
    assert_eq!(maildir.user_of("Alice-x+y"), "Alice");
    assert_eq!(maildir.user_of("Bob+tag"), "Bob");
    let off = parse(&format!("{LMTP}recipient_delimiter = \"\"\n"));
    assert_eq!(off.domain[0].user_of("Alice+tag"), "alice+tag");
}
