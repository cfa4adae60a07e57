use super::*;

fn unique(counter: u64) -> Unique {
    Unique {
        secs: 1_700_000_000,
        micros: 123_456,
        pid: 4242,
        shard: 1,
        counter,
    }
}

#[test]
fn file_names_are_unique_and_hold_no_slash_or_colon() {
    let host = host_part("mx/1:a.example");
    assert_eq!(host, "mx\\0571\\072a.example");
    let a = file_name(&unique(1), &host, 1234);
    let b = file_name(&unique(2), &host, 1234);
    assert_eq!(
        a,
        "1700000000.M123456P4242Q1_1.mx\\0571\\072a.example,S=1234"
    );
    assert_ne!(a, b);
    assert!(!a.contains(['/', ':']));
}

#[test]
fn the_prefix_is_return_path_then_delivered_to() {
    let mut out = Vec::new();
    header_prefix(&mut out, b"sender@example.com", b"alice@example.org");
    assert_eq!(
        out,
        b"Return-Path: <sender@example.com>\r\nDelivered-To: alice@example.org\r\n"
    );
    out.clear();
    header_prefix(&mut out, b"", b"alice@example.org");
    assert!(out.starts_with(b"Return-Path: <>\r\n"));
}

#[test]
fn a_delivered_to_of_the_same_mailbox_in_the_header_is_a_loop() {
    let m = b"Received: x\r\nDelivered-To: Alice@Example.ORG\r\nSubject: hi\r\n\r\nbody\r\n";
    assert!(delivered_before(m, b"alice@example.org"));
    assert!(!delivered_before(m, b"bob@example.org"));
    // Folded, in angle brackets.
    let m = b"Delivered-To:\r\n <alice@example.org>\r\n\r\n";
    assert!(delivered_before(m, b"alice@example.org"));
    // In the body it is no header field.
    let m = b"Subject: x\r\n\r\nDelivered-To: alice@example.org\r\n";
    assert!(!delivered_before(m, b"alice@example.org"));
    // Another field whose name starts the same way.
    let m = b"Delivered-To-X: alice@example.org\r\n\r\n";
    assert!(!delivered_before(m, b"alice@example.org"));
}

#[test]
fn unsafe_local_parts_are_refused() {
    for bad in ["", ".", "..", ".hidden", "a/b", "../etc", "a\0b", "/abs"] {
        assert!(!safe_user(bad), "{bad:?}");
    }
    for good in ["alice", "a.b", "jörg", "x-y_z", "a..b"] {
        assert!(safe_user(good), "{good:?}");
    }
}

#[test]
fn directories_get_search_where_files_get_read_or_write() {
    assert_eq!(dir_mode(0o600), 0o700);
    assert_eq!(dir_mode(0o640), 0o750);
    assert_eq!(dir_mode(0o604), 0o705);
    assert_eq!(dir_mode(0o000), 0o000);
}

#[test]
fn owners_by_number_or_name() {
    assert_eq!(Owner::parse(""), Ok(None));
    assert_eq!(
        Owner::parse("1000:100"),
        Ok(Some(Owner {
            uid: 1000,
            gid: Some(100)
        }))
    );
    assert_eq!(Owner::parse("root"), Ok(Some(Owner { uid: 0, gid: None })));
    assert!(Owner::parse("no-such-user-here").is_err());
}

fn file<'a>(root: &'a Path, user: &'a str, name: &'a str, prefix: &'a [u8]) -> MaildirFile<'a> {
    MaildirFile {
        root,
        user,
        prefix,
        name,
        mode: 0o640,
        owner: None,
        clean_tmp: false,
    }
}

#[test]
fn a_delivery_makes_the_maildir_and_lands_whole_in_new() {
    let root = tempfile::tempdir().unwrap();
    let body = b"Subject: hi\r\n\r\nline\r\n.dot\r\n";
    let f = file(
        root.path(),
        "alice",
        "1.M1P1Q0_1.host,S=10",
        b"Return-Path: <>\r\n",
    );
    let path = deliver(&f, body).unwrap();
    assert_eq!(path, root.path().join("alice/new/1.M1P1Q0_1.host,S=10"));
    let mut want = b"Return-Path: <>\r\n".to_vec();
    want.extend_from_slice(body);
    assert_eq!(fs::read(&path).unwrap(), want);
    for sub in ["cur", "new", "tmp"] {
        let m = fs::metadata(root.path().join("alice").join(sub)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o750, "{sub}");
    }
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::read_dir(root.path().join("alice/tmp")).unwrap().count(),
        0
    );
    // The same name again never replaces the file in new/.
    assert!(deliver(&f, b"other").is_err());
    assert_eq!(fs::read(&path).unwrap(), want);
    assert_eq!(
        fs::read_dir(root.path().join("alice/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn a_missing_root_is_a_temporary_root_failure() {
    let root = tempfile::tempdir().unwrap();
    let gone = root.path().join("gone");
    let e = deliver(&file(&gone, "alice", "n", b""), b"x").unwrap_err();
    assert!(e.is_root());
    assert_eq!(e.reply_code(), (451, (4, 3, 0)));
    assert!(!gone.exists());
}

#[test]
fn over_quota_is_4_2_2() {
    let e = MaildirError::io(
        "write",
        Path::new("/x"),
        io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error()),
    );
    assert_eq!(e.reply_code(), (452, (4, 2, 2)));
    let e = MaildirError::io(
        "write",
        Path::new("/x"),
        io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
    );
    assert_eq!(e.reply_code(), (451, (4, 3, 0)));
}

#[test]
fn stale_files_in_tmp_are_cleaned() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("old"), b"partial").unwrap();
    fs::write(tmp.join("fresh"), b"partial").unwrap();
    let now = SystemTime::now();
    let old = now - TMP_MAX_AGE - Duration::from_secs(60);
    File::options()
        .write(true)
        .open(tmp.join("old"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(clean_tmp(&tmp, now), 1);
    assert!(!tmp.join("old").exists());
    assert!(tmp.join("fresh").exists());
}
