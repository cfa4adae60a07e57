//! The `petrel` binary's command line: help, version, and `check` on good
//! and bad config files, run as an operator would run them.

use std::path::Path;
use std::process::{Command, Output};

fn petrel(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run petrel: {e}"),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config file in a fresh temporary directory (kept alive by the guard).
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("petrel.toml");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("{}: {e}", path.display());
    }
    let path = path.display().to_string();
    (dir, path)
}

/// `check` must exit 2 and put the error at `line:col` of the file.
fn assert_rejected_at(text: &str, line_col: &str, contains: &str) {
    let (_dir, path) = config_file(text);
    let output = petrel(&["check", "--config", &path]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.starts_with(&format!("{path}:{line_col}: ")),
        "expected {path}:{line_col}: in {message:?}"
    );
    assert!(
        message.contains(contains),
        "expected {contains:?} in {message:?}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message:?}");
    assert!(output.stdout.is_empty());
}

#[test]
fn version_names_the_program() {
    let output = petrel(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("petrel {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_commands() {
    let output = petrel(&["--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for command in ["run", "check", "spool", "Exit status", "PETREL_LOG"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let spool_help = stdout(&petrel(&["spool", "--help"]));
    assert!(spool_help.contains("inspect"), "{spool_help}");
}

#[test]
fn check_prints_effective_settings_of_a_good_file() {
    let (_dir, path) = config_file(
        "[server]\nhostname = \"mta.example.test\"\nshards = 1\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\nmax_recipients = 500\n",
    );
    let output = petrel(&["check", "--config", &path]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let settings = stdout(&output);
    for line in [
        "hostname = \"mta.example.test\"",
        "max_recipients = 500",
        "path = \"/var/spool/petrel\"",
        "command_timeout = \"5m\"",
        "networks = [\"127.0.0.0/8\", \"::1/128\"]",
        "paused = false",
        "max_age = \"5d\"",
    ] {
        assert!(settings.contains(line), "{line} missing from:\n{settings}");
    }
}

#[test]
fn check_output_is_itself_a_valid_config() {
    let first =
        check_output_reads_back("[[listener]]\naddress = \"[::1]:25\"\ndata_timeout = 90\n");
    assert!(first.contains("data_timeout = \"90s\""), "{first}");
}

/// What `check` prints for `text`, after proving that checking the printed
/// text prints the same settings again.
fn check_output_reads_back(text: &str) -> String {
    let (dir, path) = config_file(text);
    let first = petrel(&["check", "--config", &path]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first = stdout(&first);
    let again = dir.path().join("again.toml");
    if let Err(e) = std::fs::write(&again, &first) {
        panic!("{e}");
    }
    let second = petrel(&["check", "--config", &again.display().to_string()]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&stdout(&second)), body(&first));
    first
}

#[test]
fn check_default_shows_the_embedded_default() {
    let output = petrel(&["check", "--default"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let settings = stdout(&output);
    assert!(
        settings.contains("address = \"127.0.0.1:2525\""),
        "{settings}"
    );
    assert!(settings.contains("path = \"./petrel-spool\""), "{settings}");
}

#[test]
fn check_rejects_unknown_keys_at_their_line() {
    assert_rejected_at(
        "[server]\nshards = 1\nhostnme = \"x\"\n",
        "3:1",
        "unknown field `hostnme`",
    );
}

#[test]
fn check_rejects_bad_values_at_their_line() {
    assert_rejected_at("\n[server]\nshards = \"many\"\n", "3:10", "invalid type");
    assert_rejected_at(
        "[[listener]]\naddress = \"127.0.0.1:2525\"\ncommand_timeout = \"soon\"\n",
        "3:19",
        "invalid duration",
    );
    assert_rejected_at(
        "[relay]\nnetworks = [\"10.0.0.0/33\"]\n",
        "2:13",
        "prefix length 33",
    );
}

#[test]
fn check_rejects_too_few_recipients() {
    assert_rejected_at(
        "[server]\nshards = 1\n\n[[listener]]\naddress = \"127.0.0.1:2525\"\nmax_recipients = 50\n",
        "6:18",
        "max_recipients = 50 is below the minimum of 100",
    );
}

/// Sources on 127.0.0.2 and 127.0.0.3 (all of 127.0.0.0/8 is local on
/// Linux), a weighted pool, and a rule for a named listener.
const EGRESS: &str = r#"
source = [
  { name = "ip1", address = "127.0.0.2", ehlo = "mta1.example.test" },
  { name = "ip2", address = "127.0.0.3" },
]

[[listener]]
name = "submission"
address = "127.0.0.1:2587"

[[pool]]
name = "transactional"
sources = [{ source = "ip1", weight = 3 }, { source = "ip2" }]

[pool_selection]
unknown = "default"
rules = [{ listener = "submission", pool = "transactional" }]
"#;

#[test]
fn check_prints_sources_and_pools_that_read_back_the_same() {
    let first = check_output_reads_back(EGRESS);
    for line in [
        "name = \"submission\"",
        "address = \"127.0.0.3\"",
        "weight = 3",
        "header = \"X-Petrel-Pool\"",
        "default = \"transactional\"",
        "unknown = \"default\"",
        "listener = \"submission\"",
    ] {
        assert!(first.contains(line), "{line} missing from:\n{first}");
    }
}

#[test]
fn check_rejects_a_pool_of_an_unknown_source_at_its_line() {
    let text = EGRESS.replace("{ source = \"ip2\" }", "{ source = \"ip9\" }");
    assert_rejected_at(
        &text,
        "13:55",
        "source \"ip9\" is not the name of a [[source]]",
    );
}

#[test]
fn check_reports_a_source_address_this_machine_lacks() {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never configured.
    let (_dir, path) = config_file(&EGRESS.replace("127.0.0.3", "192.0.2.55"));
    let output = petrel(&["check", "--config", &path]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.starts_with(
            "petrel: source ip2: address 192.0.2.55 is not configured on this machine"
        ),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(output.stdout.is_empty());
}

#[test]
fn check_reports_a_maildir_root_that_cannot_be_made_with_its_domain() {
    let (dir, path) = config_file("");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let root = blocker.join("mail");
    let text = format!(
        "[[domain]]\nname = \"example.org\"\ndelivery = \"maildir\"\nmaildir_root = \"{}\"\nverify = \"none\"\n",
        root.display()
    );
    std::fs::write(&path, &text).unwrap();
    let output = petrel(&["check", "--config", &path]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    let want = format!(
        "petrel: [[domain]] example.org: Maildir root {}: cannot create it",
        root.display()
    );
    assert!(message.starts_with(&want), "{message}");
    // A root that is only missing is made.
    let root = dir.path().join("vhosts/example.org");
    std::fs::write(
        &path,
        text.replace(
            &blocker.join("mail").display().to_string(),
            &root.display().to_string(),
        ),
    )
    .unwrap();
    let output = petrel(&["check", "--config", &path]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(root.is_dir());
}

#[test]
fn check_needs_a_file() {
    let output = petrel(&["check"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--config <FILE>"),
        "{}",
        stderr(&output)
    );

    let missing = Path::new("/nonexistent/petrel.toml");
    let output = petrel(&["check", "--config", &missing.display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("/nonexistent/petrel.toml: cannot read: "),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_commands_are_usage_errors() {
    assert_eq!(petrel(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(petrel(&["run", "--no-such-flag"]).status.code(), Some(2));
}

#[test]
fn run_with_a_bad_config_exits_2_before_starting() {
    let (_dir, path) = config_file("[spool]\nsegment_size = 12345\n");
    let output = petrel(&["run", "--config", &path]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!("{path}:2:16: segment_size")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn spool_inspect_of_a_missing_directory_fails() {
    let output = petrel(&["spool", "inspect", "/nonexistent/spool"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.starts_with("petrel: spool inspect: "), "{message}");
    assert!(message.contains("/nonexistent/spool"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

/// Delivery rates and one `[[shaping]]` rule of each matcher form.
const SHAPING: &str = r#"
[delivery]
max_message_rate = "300/min"
max_recipients_per_transaction = 50

[[shaping]]
domain = "Gmail.com"
max_message_rate = "600/min"
max_connection_rate = "30/minute"

[[shaping]]
mx = "*.outlook.com"
max_connections = 10
"#;

#[test]
fn check_prints_shaping_rules_that_read_back_the_same() {
    let first = check_output_reads_back(SHAPING);
    for line in [
        "max_message_rate = \"300/min\"",
        "max_connection_rate = \"\"",
        "max_recipients_per_transaction = 50",
        "[[shaping]]\ndomain = \"gmail.com\"\nmax_message_rate = \"600/min\"\nmax_connection_rate = \"30/min\"\n",
        "[[shaping]]\nmx = \"*.outlook.com\"\nmax_connections = 10\n",
    ] {
        assert!(first.contains(line), "{line} missing from:\n{first}");
    }
}

#[test]
fn check_rejects_a_bad_shaping_rate_at_its_line() {
    let text = SHAPING.replace("\"30/minute\"", "\"30/fortnight\"");
    assert_rejected_at(&text, "9:23", "invalid rate \"30/fortnight\": unknown unit");
}

/// The shipped backoff rules off, and one `[[backoff]]` rule of each action.
const BACKOFF: &str = r#"
[delivery]
default_backoff = false

[[backoff]]
code = 421
enhanced = "4.7.28"
reply = "(?i)unusual rate"
action = "suspend"
duration = "30m"

[[backoff]]
reply = "(?i)too many connections"
action = "throttle"
factor = 0.25
duration = 900
"#;

#[test]
fn check_prints_backoff_rules_that_read_back_the_same() {
    let first = check_output_reads_back(BACKOFF);
    for line in [
        "default_backoff = false",
        "[[backoff]]\ncode = 421\nenhanced = \"4.7.28\"\nreply = \"(?i)unusual rate\"\naction = \"suspend\"\nduration = \"30m\"\n",
        "[[backoff]]\nreply = \"(?i)too many connections\"\naction = \"throttle\"\nfactor = 0.25\nduration = \"15m\"\n",
    ] {
        assert!(first.contains(line), "{line} missing from:\n{first}");
    }
}

#[test]
fn check_rejects_a_bad_backoff_pattern_at_its_line() {
    let text = BACKOFF.replace("\"(?i)too many connections\"", "\"(too many\"");
    assert_rejected_at(
        &text,
        "13:9",
        "reply pattern \"(too many\" does not compile",
    );
}
