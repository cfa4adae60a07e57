use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::signature::{self, Ed25519KeyPair};

use super::header::{fields, signed_fields};
use super::sign::signature_field;
use super::verify::verify_rsa;
use super::*;

/// RFC 6376 3.4.5: the example message.
const EXAMPLE_HEADER: &[u8] = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n";
const EXAMPLE_BODY: &[u8] = b" C \r\nD \t E\r\n\r\n\r\n";

fn canonical_header(canon: Canon, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(header) {
        canon::header_field(canon, field.raw, &mut out);
    }
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

fn body_hash(canon: Canon, chunks: &[&[u8]]) -> [u8; 32] {
    let mut hasher = BodyHasher::new(canon);
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finish()
}

#[test]
fn rfc6376_canonicalization_examples() {
    // 3.4.5, relaxed then simple.
    let cases: [(Canon, &[u8], &[u8]); 2] = [
        (Canon::Relaxed, b"a:X\r\nb:Y Z\r\n", b" C\r\nD E\r\n"),
        (
            Canon::Simple,
            b"A: X\r\nB : Y\t\r\n\tZ  \r\n",
            b" C \r\nD \t E\r\n",
        ),
    ];
    for (canon, header, body) in cases {
        assert_eq!(canonical_header(canon, EXAMPLE_HEADER), header, "{canon:?}");
        assert_eq!(body_hash(canon, &[EXAMPLE_BODY]), sha256(body), "{canon:?}");
    }
}

#[test]
fn empty_bodies_hash_as_rfc6376_says() {
    // 3.4.3: simple makes an empty body one CRLF; 3.4.4: relaxed leaves
    // it empty. Both drop the empty lines at the end.
    assert_eq!(body_hash(Canon::Simple, &[]), sha256(b"\r\n"));
    assert_eq!(body_hash(Canon::Simple, &[b"\r\n\r\n"]), sha256(b"\r\n"));
    assert_eq!(body_hash(Canon::Relaxed, &[]), sha256(b""));
    assert_eq!(body_hash(Canon::Relaxed, &[b" \r\n\t\r\n"]), sha256(b""));
    // A body without a final CRLF gets one.
    assert_eq!(body_hash(Canon::Simple, &[b"a"]), sha256(b"a\r\n"));
    assert_eq!(body_hash(Canon::Relaxed, &[b"a  "]), sha256(b"a\r\n"));
}

#[test]
fn the_body_hash_does_not_depend_on_where_chunks_split() {
    let body: &[u8] = b"Hi \t there\r\n\r\n.line with a dot\r\nbare\rCR and \xc3\xa9 8-bit\r\n  \r\nend  \r\n\r\n\r\n";
    for canon in [Canon::Simple, Canon::Relaxed] {
        let whole = body_hash(canon, &[body]);
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let split = body_hash(canon, &[&body[..a], &body[a..b], &body[b..]]);
                assert_eq!(split, whole, "{canon:?} split at {a} and {b}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(body_hash(canon, &bytes), whole, "{canon:?} byte by byte");
    }
    assert_eq!(
        body_hash(Canon::Relaxed, &[body]),
        sha256(b"Hi there\r\n\r\n.line with a dot\r\nbare\rCR and \xc3\xa9 8-bit\r\n\r\nend\r\n")
    );
    assert_eq!(
        body_hash(Canon::Simple, &[body]),
        sha256(&body[..body.len() - 4])
    );
}

#[test]
fn a_long_run_of_empty_lines_inside_the_body_is_kept() {
    let mut body = b"a\r\n".to_vec();
    body.extend(b"\r\n".repeat(1000));
    body.extend(b"b\r\n");
    for canon in [Canon::Simple, Canon::Relaxed] {
        assert_eq!(body_hash(canon, &[&body]), sha256(&body), "{canon:?}");
    }
}

/// RFC 8463 appendix A: the Ed25519 key (A.1), and the message (A.3).
const RFC8463_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const RFC8463_HEADER: &[u8] = b"From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie Q <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\r\n";
const RFC8463_BODY: &[u8] = b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
const RFC8463_H: [&str; 8] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "from",
    "subject",
    "date",
];
const RFC8463_BH: &str = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";

/// The signed data for one of A.3's fields, given up to its `b=`.
fn rfc8463_signed_data(unsigned_field: &str) -> Vec<u8> {
    let mut data = Vec::new();
    signed_fields(
        Canon::Relaxed,
        &fields(RFC8463_HEADER),
        &RFC8463_H,
        &mut data,
    );
    signature_field(Canon::Relaxed, unsigned_field, &mut data);
    data
}

#[test]
fn rfc8463_ed25519_example_signature_and_body_hash() {
    let hash = body_hash(Canon::Relaxed, &[RFC8463_BODY]);
    assert_eq!(BASE64.encode(hash), RFC8463_BH);
    let seed = BASE64.decode(RFC8463_SEED).unwrap();
    let key = SigningKey::Ed25519(Ed25519KeyPair::from_seed_unchecked(&seed).unwrap());
    assert_eq!(
        BASE64.encode(key.public_key_record()),
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    );
    let data = rfc8463_signed_data(
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
         d=football.example.com; i=@football.example.com;\r\n \
         q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
         subject : date : message-id : from : subject : date;\r\n \
         bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=",
    );
    assert_eq!(
        BASE64.encode(key.sign(&data).unwrap()),
        "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
    );
}

#[test]
fn rfc8463_rsa_example_verifies_over_our_canonical_data() {
    // A.3's RSA signature, made by a 1024-bit key (A.1) that ring will not
    // sign with but verifies: a check of the canonical data alone.
    let spki = BASE64
        .decode(
            "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi\
             Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZy\
             VYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
        )
        .unwrap();
    let data = rfc8463_signed_data(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n \
         d=football.example.com; i=@football.example.com;\r\n \
         q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n \
         date : message-id : from : subject : date;\r\n \
         bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=",
    );
    let b = BASE64
        .decode(
            "F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tF\
             OeS9mPYQTnGdaSGsgeefOsk2JzdA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=",
        )
        .unwrap();
    verify_rsa(&spki, &data, &b).expect("the RFC's RSA signature verifies");
}

/// [`verify::verify`], and no line of the field 78 characters or longer.
pub(crate) fn verify(
    field: &str,
    header: &[u8],
    body: &[u8],
    p: &[u8],
) -> Result<Vec<(String, String)>, String> {
    for line in field.split("\r\n") {
        if line.len() >= 78 {
            return Err(format!("line of {} characters: {line:?}", line.len()));
        }
    }
    super::verify::verify(field, header, body, p)
}

pub(crate) fn rsa_key() -> &'static NewKeyPem {
    static KEY: std::sync::OnceLock<NewKeyPem> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let key = keygen::generate(Algorithm::RsaSha256, 2048).unwrap();
        NewKeyPem {
            pem: key.pem,
            public: key.public,
        }
    })
}

pub(crate) struct NewKeyPem {
    pub pem: String,
    pub public: Vec<u8>,
}

fn signer(key: SigningKey, canonicalization: Canonicalization, expire: Option<u64>) -> Signer {
    Signer {
        domain: "example.com".into(),
        selector: "s2026".into(),
        key,
        canonicalization,
        headers: DEFAULT_HEADERS.iter().map(|&h| h.into()).collect(),
        expire,
    }
}

const HEADER: &[u8] = b"From: Alice <alice@news.example.com>\r\n\
To: bob@example.net\r\n\
Subject: a subject long enough that it has to be folded over more than one line,\r\n \
 as mail clients do\r\n\
Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
Message-ID: <1@news.example.com>\r\n\
X-Mailer: not signed\r\n\r\n";
const BODY: &[u8] = b"Hello \xc3\xa9\r\n.a line with a dot\r\n..two\r\n\r\n";

#[test]
fn an_rsa_signature_verifies_with_rings_verifier() {
    let key = rsa_key();
    for c in [
        "relaxed/relaxed",
        "simple/simple",
        "relaxed/simple",
        "simple/relaxed",
    ] {
        let c = Canonicalization::parse(c).unwrap();
        let s = signer(
            key::parse_pem(key.pem.as_bytes()).unwrap(),
            c,
            Some(7 * 86400),
        );
        let signers = [&s];
        let mut signing = MessageSigning::new(&signers);
        for chunk in BODY.chunks(5) {
            signing.update(chunk);
        }
        let field = signing.finish(HEADER, 1_772_000_000).unwrap();
        let tags = verify(&field, HEADER, BODY, &key.public)
            .unwrap_or_else(|e| panic!("{c}: {e}\n{field}"));
        let tag = |n: &str| tags.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(tag("v"), "1");
        assert_eq!(tag("a"), "rsa-sha256");
        assert_eq!(tag("c"), c.to_string());
        assert_eq!(tag("d"), "example.com");
        assert_eq!(tag("s"), "s2026");
        assert_eq!(tag("t"), "1772000000");
        assert_eq!(tag("x"), "1772604800");
        assert_eq!(tag("h"), "From:From:To:Subject:Date:Message-ID");
        // A tampered body or header does not verify.
        assert!(verify(&field, HEADER, b"Hello\r\n", &key.public).is_err());
        let changed = [HEADER, b"".as_slice()].concat();
        let changed = String::from_utf8(changed).unwrap().replace("bob@", "eve@");
        assert!(verify(&field, changed.as_bytes(), BODY, &key.public).is_err());
    }
}

#[test]
fn a_from_added_after_signing_breaks_the_signature() {
    let seed = [7u8; 32];
    let key = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let public = signature::KeyPair::public_key(&key).as_ref().to_vec();
    let s = signer(SigningKey::Ed25519(key), Canonicalization::DEFAULT, None);
    let signers = [&s];
    let mut signing = MessageSigning::new(&signers);
    signing.update(BODY);
    let field = signing.finish(HEADER, 1_772_000_000).unwrap();
    let tags = verify(&field, HEADER, BODY, &public).unwrap();
    assert!(
        tags.iter().all(|(k, _)| k != "x"),
        "no x= unless configured"
    );
    let added = [b"From: mallory@evil.example\r\n".as_slice(), HEADER].concat();
    let appended = [
        &HEADER[..HEADER.len() - 2],
        b"From: mallory@evil.example\r\n\r\n",
    ]
    .concat();
    for forged in [added, appended] {
        assert!(verify(&field, &forged, BODY, &public).is_err());
    }
}

#[test]
fn several_signers_each_add_their_own_field() {
    let rsa = signer(
        key::parse_pem(rsa_key().pem.as_bytes()).unwrap(),
        Canonicalization::DEFAULT,
        None,
    );
    let key = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
    let ed_public = signature::KeyPair::public_key(&key).as_ref().to_vec();
    let simple = Canonicalization::parse("simple/simple").unwrap();
    let ed = signer(SigningKey::Ed25519(key), simple, None);
    let signers = [&rsa, &ed];
    let mut signing = MessageSigning::new(&signers);
    signing.update(BODY);
    let fields = signing.finish(HEADER, 1).unwrap();
    let parts: Vec<&str> = fields
        .split("DKIM-Signature:")
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(parts.len(), 2);
    verify(
        &format!("DKIM-Signature:{}", parts[0]),
        HEADER,
        BODY,
        &rsa_key().public,
    )
    .unwrap();
    verify(
        &format!("DKIM-Signature:{}", parts[1]),
        HEADER,
        BODY,
        &ed_public,
    )
    .unwrap();
}
