//! One accounting record: an event in a message's life (received,
//! delivered, bounced, deferred, a delay notice sent) with the fields and
//! field names of the accounting CSV that bulk-sending tools already parse.
//!
//! Owns: the record's fields, their names and order, and their rendering as
//! one CSV line (RFC 4180, CRLF) or one JSON line.
//! Must never: do I/O or read a clock (times are given in the record);
//! render by joining strings (the `csv` and `serde_json` writers quote).

use std::net::IpAddr;

use serde::Serialize;

use super::category::BounceCategory;

/// The column names, in order: the header line of every CSV file, and the
/// keys of every JSON line. A test checks that the record's serialised
/// field names are exactly these.
pub const FIELDS: [&str; 23] = [
    "type",
    "timeLogged",
    "timeQueued",
    "orig",
    "rcpt",
    "orcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "srcType",
    "srcMta",
    "dlvType",
    "dlvSourceIp",
    "dlvDestinationIp",
    "dlvEsmtpAvailable",
    "dlvSize",
    "vmta",
    "vmtaPool",
    "jobId",
    "envId",
    "queueId",
];

/// What happened, written as the record's first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RecordType {
    /// `r`: the message was accepted and queued (one record a recipient).
    #[serde(rename = "r")]
    Received,
    /// `d`: the recipient's server accepted the message.
    #[serde(rename = "d")]
    Delivered,
    /// `b`: the recipient failed for good; the sender gets a bounce.
    #[serde(rename = "b")]
    Bounced,
    /// `t`: a transient failure; the recipient stays queued for a retry.
    #[serde(rename = "t")]
    Deferred,
    /// `e`: a delay notice went to the sender. The accounting format
    /// has no letter for it; `e` is petrel's.
    #[serde(rename = "e")]
    Delayed,
}

impl RecordType {
    /// The letter in the `type` column.
    pub fn letter(self) -> &'static str {
        match self {
            RecordType::Received => "r",
            RecordType::Delivered => "d",
            RecordType::Bounced => "b",
            RecordType::Deferred => "t",
            RecordType::Delayed => "e",
        }
    }

    /// The `dsnAction` a record of this type carries (RFC 3464 2.3.3);
    /// none for a received record.
    pub fn dsn_action(self) -> Option<&'static str> {
        match self {
            RecordType::Received => None,
            RecordType::Delivered => Some("relayed"),
            RecordType::Bounced => Some("failed"),
            RecordType::Deferred | RecordType::Delayed => Some("delayed"),
        }
    }
}

/// One event for one recipient, borrowing its text from the message and
/// the reply it describes: building one allocates nothing. Times are UNIX
/// seconds; `None` is an empty field in CSV and `null` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<'a> {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// When the event happened.
    pub time_logged: u64,
    /// When the message was accepted.
    pub time_queued: u64,
    /// The envelope sender (`MAIL FROM`), empty for the null sender.
    pub orig: &'a str,
    /// The envelope recipient.
    pub rcpt: &'a str,
    /// The original recipient (DSN `ORCPT`), as given.
    pub orcpt: Option<&'a str>,
    /// `relayed`, `failed` or `delayed` (see [`RecordType::dsn_action`]).
    pub dsn_action: Option<&'static str>,
    /// The enhanced status, e.g. `5.1.1`.
    pub dsn_status: Option<DsnStatus>,
    /// The reply, e.g. `smtp;550 5.1.1 user unknown`.
    pub dsn_diag: Option<&'a str>,
    /// The remote host that gave the reply.
    pub dsn_mta: Option<&'a str>,
    /// For bounces and deferrals.
    pub bounce_cat: Option<BounceCategory>,
    /// How the message came in: `smtp`.
    pub src_type: Option<&'static str>,
    /// The client's name and address as the `Received:` field gives them.
    pub src_mta: Option<&'a str>,
    /// How delivery was tried: `smtp`.
    pub dlv_type: Option<&'static str>,
    /// The local address the delivery left from.
    pub dlv_source_ip: Option<IpAddr>,
    /// The remote address delivered to.
    pub dlv_destination_ip: Option<IpAddr>,
    /// The ESMTP extensions the remote host offered, comma-separated.
    pub dlv_esmtp_available: Option<&'a str>,
    /// The message's size in bytes.
    pub dlv_size: Option<u64>,
    /// The egress source's name.
    pub vmta: Option<&'a str>,
    /// The pool's name.
    pub vmta_pool: Option<&'a str>,
    /// The value of the job header (`[accounting] job_id_header`).
    pub job_id: Option<&'a str>,
    /// The DSN envelope ID (`MAIL FROM ... ENVID=`).
    pub env_id: Option<&'a str>,
    /// The queue ID, as in `250 ... queued as ID`.
    pub queue_id: &'a str,
}

impl<'a> Record<'a> {
    /// A record with the given essentials, `dsnAction` from the type,
    /// `srcType` `smtp` (and `dlvType` `smtp` for a delivery event), every
    /// other field empty.
    pub fn new(
        record_type: RecordType,
        (time_logged, time_queued): (u64, u64),
        orig: &'a str,
        rcpt: &'a str,
        queue_id: &'a str,
    ) -> Record<'a> {
        Record {
            record_type,
            time_logged,
            time_queued,
            orig,
            rcpt,
            orcpt: None,
            dsn_action: record_type.dsn_action(),
            dsn_status: None,
            dsn_diag: None,
            dsn_mta: None,
            bounce_cat: None,
            src_type: Some("smtp"),
            src_mta: None,
            dlv_type: (record_type != RecordType::Received).then_some("smtp"),
            dlv_source_ip: None,
            dlv_destination_ip: None,
            dlv_esmtp_available: None,
            dlv_size: None,
            vmta: None,
            vmta_pool: None,
            job_id: None,
            env_id: None,
            queue_id,
        }
    }
}

/// An enhanced status code (RFC 3463), written `class.subject.detail`
/// without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsnStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl std::fmt::Display for DsnStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl Serialize for DsnStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Record<'_> {
    /// Writes the record as one CSV line into `out`, its fields in
    /// [`FIELDS`] order: the numbers and addresses formatted into
    /// `scratch` (kept by the caller, so no allocation per record), every
    /// field handed to the CSV writer as bytes, which quotes what needs
    /// it. The same line the record's `Serialize` gives (a test holds
    /// them equal), without serde's work per field.
    fn write_csv(&self, out: &mut CsvLines, scratch: &mut String) {
        use std::fmt::{Display, Write};
        use std::ops::Range;
        fn put(scratch: &mut String, value: Option<impl Display>) -> Range<usize> {
            let start = scratch.len();
            if let Some(value) = value {
                // Writing into a String cannot fail.
                let _ = write!(scratch, "{value}");
            }
            start..scratch.len()
        }
        /// Numbers without `fmt`'s machinery: two or three a record.
        fn number(scratch: &mut String, value: Option<u64>) -> Range<usize> {
            let start = scratch.len();
            if let Some(value) = value {
                scratch.push_str(itoa::Buffer::new().format(value));
            }
            start..scratch.len()
        }
        scratch.clear();
        let logged = number(scratch, Some(self.time_logged));
        let queued = number(scratch, Some(self.time_queued));
        let status = {
            let start = scratch.len();
            if let Some(s) = self.dsn_status {
                let mut number = itoa::Buffer::new();
                scratch.push_str(number.format(s.class));
                scratch.push('.');
                scratch.push_str(number.format(s.subject));
                scratch.push('.');
                scratch.push_str(number.format(s.detail));
            }
            start..scratch.len()
        };
        let source = put(scratch, self.dlv_source_ip);
        let destination = put(scratch, self.dlv_destination_ip);
        let size = number(scratch, self.dlv_size);
        let s = scratch.as_bytes();
        fn text(v: Option<&str>) -> &[u8] {
            v.map_or(b"", str::as_bytes)
        }
        out.write_record(&[
            self.record_type.letter().as_bytes(),
            &s[logged],
            &s[queued],
            self.orig.as_bytes(),
            self.rcpt.as_bytes(),
            text(self.orcpt),
            text(self.dsn_action),
            &s[status],
            text(self.dsn_diag),
            text(self.dsn_mta),
            text(self.bounce_cat.map(BounceCategory::as_str)),
            text(self.src_type),
            text(self.src_mta),
            text(self.dlv_type),
            &s[source],
            &s[destination],
            text(self.dlv_esmtp_available),
            &s[size],
            text(self.vmta),
            text(self.vmta_pool),
            text(self.job_id),
            text(self.env_id),
            self.queue_id.as_bytes(),
        ]);
    }
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 CSV with a header line, CRLF line ends.
    #[default]
    Csv,
    /// One JSON object a line, LF line ends.
    Json,
}

/// The CSV header line (none in JSON), for the top of a new file.
pub fn header(format: Format) -> Vec<u8> {
    match format {
        Format::Csv => {
            let mut out = CsvLines::new(0);
            out.write_record(&FIELDS.map(str::as_bytes));
            out.into_bytes()
        }
        Format::Json => Vec::new(),
    }
}

/// CSV lines (RFC 4180, CRLF line ends) written by the CSV library's
/// writer straight into the bytes that go to the log: no buffer of its
/// own to copy through, nothing allocated per record.
struct CsvLines {
    writer: csv_core::Writer,
    /// The lines are `buf[..used]`; the rest is room, zeroed when made.
    buf: Vec<u8>,
    used: usize,
}

/// Room beyond a batch's size, so that the record that fills a batch
/// fits without growing it: records are a few hundred bytes.
const RECORD_ROOM: usize = 4096;

impl CsvLines {
    fn new(capacity: usize) -> CsvLines {
        let writer = csv_core::WriterBuilder::new()
            .terminator(csv_core::Terminator::CRLF)
            .build();
        CsvLines {
            writer,
            buf: vec![0; capacity + RECORD_ROOM],
            used: 0,
        }
    }

    /// One line: the fields, each quoted by the CSV library when its
    /// writer says the field needs it, then CRLF. This is the
    /// csv crate's own fast path for a record that fits its buffer (room
    /// is made first here), without its state machine's call per field
    /// and per delimiter; a test holds the lines equal to its writer's.
    fn write_record(&mut self, fields: &[&[u8]]) {
        // Every byte doubled and two quotes a field, a delimiter each, CRLF.
        let most: usize = fields.iter().map(|f| 2 * f.len() + 3).sum::<usize>() + 2;
        while self.buf.len() - self.used < most {
            self.grow();
        }
        let w = &self.writer;
        let (quote, escape, double) = (w.get_quote(), w.get_escape(), w.get_double_quote());
        let out = &mut self.buf[self.used..];
        let mut n = 0;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out[n] = w.get_delimiter();
                n += 1;
            }
            if !w.should_quote(field) {
                out[n..n + field.len()].copy_from_slice(field);
                n += field.len();
                continue;
            }
            out[n] = quote;
            n += 1;
            // The room was made above: all of the field goes in.
            let (_, _, wrote) = csv_core::quote(field, &mut out[n..], quote, escape, double);
            n += wrote;
            out[n] = quote;
            n += 1;
        }
        out[n..n + 2].copy_from_slice(b"\r\n");
        self.used += n + 2;
    }

    fn grow(&mut self) {
        self.buf.resize(self.buf.len() * 2, 0);
    }

    fn len(&self) -> usize {
        self.used
    }

    /// The lines written, leaving room for `capacity` bytes more.
    fn take(&mut self, capacity: usize) -> Vec<u8> {
        let mut lines = std::mem::replace(&mut self.buf, vec![0; capacity + RECORD_ROOM]);
        lines.truncate(std::mem::take(&mut self.used));
        lines
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.take(0)
    }
}

/// Lines rendered where their records are made, gathered to go to the
/// writer thread in one piece: per record, no allocation and nothing
/// shared with another core.
pub struct Lines {
    format: Format,
    out: Out,
    records: u64,
    /// Where a CSV record's numbers and addresses are formatted.
    scratch: String,
}

enum Out {
    /// Boxed: the CSV writer carries its table of bytes to quote. Made
    /// once; each batch takes only the bytes.
    Csv(Box<CsvLines>),
    Json(Vec<u8>),
}

impl Lines {
    /// Empty, with room for `capacity` bytes.
    pub fn new(format: Format, capacity: usize) -> Lines {
        Lines {
            format,
            out: Out::new(format, capacity),
            records: 0,
            scratch: String::with_capacity(128),
        }
    }

    /// Renders `record` as one more line.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), RenderError> {
        match &mut self.out {
            Out::Csv(out) => record.write_csv(out, &mut self.scratch),
            Out::Json(out) => {
                serde_json::to_writer(&mut *out, record)?;
                out.push(b'\n');
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Records held.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        match &self.out {
            Out::Csv(out) => out.len(),
            Out::Json(out) => out.len(),
        }
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The lines held and their count, leaving a fresh buffer of
    /// `capacity` bytes; `None` when empty. A record that failed to
    /// render may have left part of a line: the caller counts the whole
    /// batch lost instead (see [`Lines::discard`]).
    pub fn take(&mut self, capacity: usize) -> Option<(Vec<u8>, u64)> {
        if self.records == 0 {
            return None;
        }
        let records = std::mem::take(&mut self.records);
        let bytes = match &mut self.out {
            Out::Csv(out) => out.take(capacity),
            Out::Json(out) => std::mem::replace(out, Vec::with_capacity(capacity)),
        };
        Some((bytes, records))
    }

    /// Drops what is held (after a render error, which may leave half a
    /// line); returns how many records went.
    pub fn discard(&mut self, capacity: usize) -> u64 {
        self.out = Out::new(self.format, capacity);
        std::mem::take(&mut self.records)
    }
}

/// A record that could not be rendered as JSON (not expected: every
/// field is a string or a number; CSV cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Out {
    fn new(format: Format, capacity: usize) -> Out {
        match format {
            Format::Csv => Out::Csv(Box::new(CsvLines::new(capacity))),
            Format::Json => Out::Json(Vec::with_capacity(capacity)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounce with every field given, and awkward text in some.
    fn bounce() -> Record<'static> {
        Record {
            orcpt: Some("rfc822;Bob@Example.com"),
            dsn_status: Some(DsnStatus {
                class: 5,
                subject: 1,
                detail: 1,
            }),
            dsn_diag: Some("smtp;550-5.1.1 \"no\" such user,\r\n550 5.1.1 try again"),
            dsn_mta: Some("mx1.example.com"),
            bounce_cat: Some(BounceCategory::BadMailbox),
            src_mta: Some("client.example (192.0.2.7)"),
            dlv_source_ip: Some(IpAddr::from([203, 0, 113, 10])),
            dlv_destination_ip: "2001:db8::25".parse().ok(),
            dlv_esmtp_available: Some("PIPELINING,SIZE,8BITMIME"),
            dlv_size: Some(2048),
            vmta: Some("ip1"),
            vmta_pool: Some("newsletters"),
            job_id: Some("spring-sale"),
            env_id: Some("env-1"),
            ..Record::new(
                RecordType::Bounced,
                (1_700_000_100, 1_700_000_000),
                "news@sender.example",
                "bob@example.com",
                "0001000000002a3f",
            )
        }
    }

    fn expected_fields() -> [&'static str; 23] {
        [
            "b",
            "1700000100",
            "1700000000",
            "news@sender.example",
            "bob@example.com",
            "rfc822;Bob@Example.com",
            "failed",
            "5.1.1",
            "smtp;550-5.1.1 \"no\" such user,\r\n550 5.1.1 try again",
            "mx1.example.com",
            "bad-mailbox",
            "smtp",
            "client.example (192.0.2.7)",
            "smtp",
            "203.0.113.10",
            "2001:db8::25",
            "PIPELINING,SIZE,8BITMIME",
            "2048",
            "ip1",
            "newsletters",
            "spring-sale",
            "env-1",
            "0001000000002a3f",
        ]
    }

    fn rendered(format: Format, records: &[Record]) -> Vec<u8> {
        let mut lines = Lines::new(format, 0);
        for record in records {
            lines.push(record).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(lines.records(), records.len() as u64);
        let mut out = header(format);
        out.extend(lines.take(0).map(|(bytes, _)| bytes).unwrap_or_default());
        assert!(lines.is_empty() && lines.take(0).is_none());
        out
    }

    #[test]
    fn csv_lines_are_those_serde_would_write() {
        let received = Record::new(RecordType::Received, (7, 7), "", "bob@example.com", "q");
        let mut delivered = Record::new(RecordType::Delivered, (9, 7), "a@b", "c,\"d\"@e", "q");
        delivered.dlv_destination_ip = "192.0.2.1".parse().ok();
        // Longer than a batch's spare room, every byte doubled by quoting.
        let long = "\"a,".repeat(RECORD_ROOM);
        let mut deferred = Record::new(RecordType::Deferred, (9, 7), "a@b", "c@d", "q");
        deferred.dsn_diag = Some(&long);
        let records = [bounce(), received, delivered, deferred];
        let mut by_serde = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        for record in &records {
            by_serde.serialize(record).unwrap_or_else(|e| panic!("{e}"));
        }
        let by_serde = by_serde.into_inner().unwrap_or_else(|e| panic!("{e}"));
        let ours = rendered(Format::Csv, &records);
        assert_eq!(
            String::from_utf8_lossy(&ours[header(Format::Csv).len()..]),
            String::from_utf8_lossy(&by_serde)
        );
    }

    #[test]
    fn csv_reads_back_field_by_field() {
        let received = Record::new(
            RecordType::Received,
            (1_700_000_000, 1_700_000_000),
            "",
            "bob@example.com",
            "0001000000002a3f",
        );
        let out = rendered(Format::Csv, &[bounce(), received]);
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let header = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
        assert_eq!(header.iter().collect::<Vec<_>>(), FIELDS);
        let rows: Vec<csv::StringRecord> = reader
            .records()
            .map(|row| row.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].iter().collect::<Vec<_>>(), expected_fields());
        let empty = |name: &str| {
            let i = FIELDS.iter().position(|f| *f == name);
            i.and_then(|i| rows[1].get(i)).unwrap_or("missing")
        };
        assert_eq!(rows[1].len(), FIELDS.len());
        assert_eq!(empty("type"), "r");
        assert_eq!(empty("orig"), "", "the null sender");
        assert_eq!(empty("dsnAction"), "");
        assert_eq!(empty("dlvType"), "");
        assert_eq!(empty("srcType"), "smtp");
        assert_eq!(empty("bounceCat"), "");
        assert_eq!(empty("dlvSize"), "");
    }

    #[test]
    fn csv_is_rfc_4180() {
        let out = rendered(Format::Csv, &[bounce()]);
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.starts_with("type,timeLogged,timeQueued,orig,rcpt,"),
            "{text}"
        );
        assert!(text.ends_with("env-1,0001000000002a3f\r\n"), "{text}");
        // Quoted only where needed, inner quotes doubled, the line break
        // kept inside the quotes.
        assert!(
            text.contains(
                ",\"smtp;550-5.1.1 \"\"no\"\" such user,\r\n550 5.1.1 try again\",mx1.example.com,"
            ),
            "{text}"
        );
        assert!(
            text.contains(",\"PIPELINING,SIZE,8BITMIME\",2048,"),
            "{text}"
        );
        assert!(
            text.contains(",smtp,client.example (192.0.2.7),smtp,"),
            "{text}"
        );
        assert_eq!(
            text.matches("\r\n").count(),
            3,
            "two line ends and one inside a field"
        );
    }

    #[test]
    fn json_lines_have_the_same_names() {
        let out = rendered(Format::Json, &[bounce(), bounce()]);
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2, "no header line in JSON");
        let value: serde_json::Value =
            serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}"));
        let object = value.as_object().unwrap_or_else(|| panic!("{value}"));
        assert_eq!(object.keys().len(), FIELDS.len());
        for (name, expected) in FIELDS.iter().zip(expected_fields()) {
            let field = &object[*name];
            let text = field
                .as_str()
                .map_or_else(|| field.to_string(), str::to_owned);
            assert_eq!(text, expected, "{name}");
        }
        assert!(object["dlvSize"].is_u64() && object["timeLogged"].is_u64());
        let plain = Record::new(RecordType::Delayed, (1, 0), "a@b", "c@d", "q");
        let out = rendered(Format::Json, &[plain]);
        let value: serde_json::Value =
            serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["type"], "e");
        assert_eq!(value["dsnAction"], "delayed");
        assert!(value["bounceCat"].is_null() && value["orcpt"].is_null());
    }

    #[test]
    fn each_type_has_its_letter() {
        for (record_type, letter) in [
            (RecordType::Received, "r"),
            (RecordType::Delivered, "d"),
            (RecordType::Bounced, "b"),
            (RecordType::Deferred, "t"),
            (RecordType::Delayed, "e"),
        ] {
            assert_eq!(record_type.letter(), letter);
            let record = Record::new(record_type, (0, 0), "a", "b", "q");
            let out = rendered(Format::Csv, &[record]);
            let line = out.split(|&b| b == b'\n').nth(1).unwrap_or_default();
            assert!(line.starts_with(format!("{letter},").as_bytes()));
        }
    }
}
