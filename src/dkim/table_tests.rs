use std::path::Path;

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::LineEnding;

use super::*;
use crate::config::Config;

fn ed25519_pem() -> String {
    keygen::generate(Algorithm::Ed25519Sha256, 0).unwrap().pem
}

fn config(text: &str) -> Config {
    Config::from_str_named(text, "test.toml").unwrap()
}

fn load_err(path: &Path) -> String {
    key::load(path).expect_err("refused")
}

#[test]
fn unusable_keys_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 512).unwrap();
    let small = write(
        "small.pem",
        small.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
    );
    assert!(load_err(&small).contains("512 bits, under the minimum of 1024"));
    let mid = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let mid = write(
        "mid.pem",
        mid.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
    );
    assert!(load_err(&mid).contains("2048 to 4096 bits"));
    let junk = write("junk.pem", b"not a key\n");
    assert!(load_err(&junk).contains("no private key"));
    assert!(load_err(&dir.path().join("missing.pem")).contains("cannot read"));
    // An RSA key in PKCS#1 form loads and is RSA.
    let pkcs1 = rsa::RsaPrivateKey::from_pkcs1_der(&rsa_pkcs1_der()).unwrap();
    let pkcs1 = write(
        "pkcs1.pem",
        pkcs1.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
    );
    assert_eq!(key::load(&pkcs1).unwrap().algorithm(), Algorithm::RsaSha256);
}

fn rsa_pkcs1_der() -> Vec<u8> {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&tests::rsa_key().pem).unwrap();
    key.to_pkcs1_der().unwrap().as_bytes().to_vec()
}

use rsa::pkcs1::DecodeRsaPrivateKey;

#[test]
fn a_key_file_that_fails_names_the_file_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, ed25519_pem()).unwrap();
    let text = format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nprivate_key = {:?}\nalgorithm = \"rsa-sha256\"\n",
        path
    );
    let err = SignerTable::load(&config(&text)).err().unwrap().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("an ed25519-sha256 key, but algorithm = \"rsa-sha256\""),
        "{err}"
    );
    let missing = text.replace("k.pem", "gone.pem");
    let err = SignerTable::load(&config(&missing))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("gone.pem") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn entries_sign_their_domain_and_below_or_their_sender_domains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, ed25519_pem()).unwrap();
    let entry = |domain: &str, selector: &str, extra: &str| {
        format!(
            "[[dkim]]\ndomain = {domain:?}\nselector = {selector:?}\nprivate_key = {path:?}\nalgorithm = \"ed25519-sha256\"\n{extra}"
        )
    };
    let text = entry("example.com", "a", "")
        + &entry("example.com", "b", "sender_domains = [\"Other.example\"]\n");
    let table = SignerTable::load(&config(&text)).unwrap();
    assert_eq!(table.len(), 2);
    let selectors = |from: &str| -> Vec<String> {
        table
            .signers_for(from)
            .iter()
            .map(|s| s.selector.to_string())
            .collect()
    };
    assert_eq!(selectors("example.com"), ["a"]);
    assert_eq!(selectors("News.Example.COM."), ["a"]);
    assert_eq!(selectors("other.example"), ["b"]);
    assert!(selectors("sub.other.example").is_empty());
    assert!(selectors("notexample.com").is_empty());
    assert!(selectors("com").is_empty());
    let twice = entry("example.com", "a", "") + &entry("example.com", "a", "");
    let err = SignerTable::load(&config(&twice))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("a second key for domain example.com and selector a"),
        "{err}"
    );
}

#[test]
fn a_key_directory_of_many_domains_is_one_map_probe_per_label() {
    let dir = tempfile::tempdir().unwrap();
    const DOMAINS: usize = 2000;
    let rng = ring::rand::SystemRandom::new();
    for i in 0..DOMAINS {
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pem = rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, der.as_ref())
            .unwrap();
        let domain_dir = dir.path().join(format!("d{i}.example"));
        std::fs::create_dir(&domain_dir).unwrap();
        std::fs::write(domain_dir.join("sel.pem"), pem).unwrap();
        std::fs::write(domain_dir.join("README"), "not a key").unwrap();
    }
    let text = format!("[signing]\nkey_dir = {:?}\n", dir.path());
    let table = SignerTable::load(&config(&text)).unwrap();
    assert_eq!(table.len(), DOMAINS);
    // One entry per domain: a lookup is a probe per label of the From:
    // domain, whatever the number of keys.
    assert_eq!(table.under.len(), DOMAINS);
    for i in 0..DOMAINS {
        let found = table.signers_for(&format!("mail.d{i}.example"));
        assert_eq!(found.len(), 1);
        assert_eq!(&*found[0].domain, format!("d{i}.example"));
        assert_eq!(&*found[0].selector, "sel");
    }
    assert!(table.signers_for(&format!("d{DOMAINS}.example")).is_empty());
}

#[test]
fn a_bad_file_in_the_key_directory_stops_the_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("example.com")).unwrap();
    let bad = dir.path().join("example.com").join("s1.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = format!("[signing]\nkey_dir = {:?}\n", dir.path());
    let err = SignerTable::load(&config(&text)).err().unwrap().to_string();
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("[signing] key_dir"),
        "{err}"
    );
}

#[test]
fn keygen_writes_a_key_that_loads_signs_and_matches_its_record() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in [Algorithm::Ed25519Sha256, Algorithm::RsaSha256] {
        let new = keygen::generate(algorithm, 2048).unwrap();
        let selector = algorithm.key_type();
        let path = keygen::write(dir.path(), "example.com", selector, &new.pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            keygen::write(dir.path(), "example.com", selector, &new.pem).is_err(),
            "never overwrites"
        );
        let record = keygen::dns_record(selector, "example.com", algorithm, &new.public);
        let prefix = format!("{selector}._domainkey.example.com IN TXT \"");
        assert!(record.starts_with(&prefix), "{record}");
        let strings: Vec<&str> = record[prefix.len() - 1..].split(' ').collect();
        assert!(strings.iter().all(|s| s.len() <= 255 + 2), "{record}");
        let text: String = strings.iter().map(|s| s.trim_matches('"')).collect();
        let p = text.split("p=").nth(1).unwrap();
        use base64::Engine;
        let public = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        // The written file signs, and the record's p= verifies it.
        let signer = Signer {
            domain: "example.com".into(),
            selector: selector.into(),
            key: key::load(&path).unwrap(),
            canonicalization: Canonicalization::DEFAULT,
            headers: vec!["From".into()].into(),
            expire: None,
        };
        let header = b"From: a@example.com\r\n\r\n";
        let mut hasher = BodyHasher::new(Canon::Relaxed);
        hasher.update(b"hi\r\n");
        let field = signer.sign(&fields(header), &hasher.finish(), 5).unwrap();
        tests::verify(&field, header, b"hi\r\n", &public).unwrap();
    }
    assert!(keygen::generate(Algorithm::RsaSha256, 1024).is_err());
}
