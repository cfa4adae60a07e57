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

/// One event for one recipient. Times are UNIX seconds; `None` is an empty
/// field in CSV and `null` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// When the event happened.
    pub time_logged: u64,
    /// When the message was accepted.
    pub time_queued: u64,
    /// The envelope sender (`MAIL FROM`), empty for the null sender.
    pub orig: String,
    /// The envelope recipient.
    pub rcpt: String,
    /// The original recipient (DSN `ORCPT`), as given.
    pub orcpt: Option<String>,
    /// `relayed`, `failed` or `delayed` (see [`RecordType::dsn_action`]).
    pub dsn_action: Option<String>,
    /// The enhanced status, e.g. `5.1.1`.
    pub dsn_status: Option<String>,
    /// The reply, e.g. `smtp;550 5.1.1 user unknown`.
    pub dsn_diag: Option<String>,
    /// The remote host that gave the reply.
    pub dsn_mta: Option<String>,
    /// For bounces and deferrals.
    pub bounce_cat: Option<BounceCategory>,
    /// How the message came in: `smtp`.
    pub src_type: Option<String>,
    /// The client's name and address as the `Received:` field gives them.
    pub src_mta: Option<String>,
    /// How delivery was tried: `smtp`.
    pub dlv_type: Option<String>,
    /// The local address the delivery left from.
    pub dlv_source_ip: Option<IpAddr>,
    /// The remote address delivered to.
    pub dlv_destination_ip: Option<IpAddr>,
    /// The ESMTP extensions the remote host offered, comma-separated.
    pub dlv_esmtp_available: Option<String>,
    /// The message's size in bytes.
    pub dlv_size: Option<u64>,
    /// The egress source's name.
    pub vmta: Option<String>,
    /// The pool's name.
    pub vmta_pool: Option<String>,
    /// The value of the job header (`[accounting] job_id_header`).
    pub job_id: Option<String>,
    /// The DSN envelope ID (`MAIL FROM ... ENVID=`).
    pub env_id: Option<String>,
    /// The queue ID, as in `250 ... queued as ID`.
    pub queue_id: String,
}

impl Record {
    /// A record with the given essentials, `dsnAction` from the type,
    /// `srcType` `smtp` (and `dlvType` `smtp` for a delivery event), every
    /// other field empty.
    pub fn new(
        record_type: RecordType,
        (time_logged, time_queued): (u64, u64),
        orig: String,
        rcpt: String,
        queue_id: String,
    ) -> Record {
        let smtp = || Some("smtp".to_owned());
        Record {
            record_type,
            time_logged,
            time_queued,
            orig,
            rcpt,
            orcpt: None,
            dsn_action: record_type.dsn_action().map(str::to_owned),
            dsn_status: None,
            dsn_diag: None,
            dsn_mta: None,
            bounce_cat: None,
            src_type: smtp(),
            src_mta: None,
            dlv_type: (record_type != RecordType::Received).then(smtp).flatten(),
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

/// Renders records into bytes: one per writer thread.
pub struct Renderer {
    format: Format,
    csv: csv::WriterBuilder,
}

/// The CSV writer's own buffer, per record: a record is a few hundred
/// bytes, and a longer one is passed through in pieces.
const CSV_BUFFER: usize = 1024;

impl Renderer {
    pub fn new(format: Format) -> Renderer {
        let mut csv = csv::WriterBuilder::new();
        csv.has_headers(false)
            .terminator(csv::Terminator::CRLF)
            .buffer_capacity(CSV_BUFFER);
        Renderer { format, csv }
    }

    /// The header line, for the top of a new file (none in JSON).
    pub fn header(&self, out: &mut Vec<u8>) -> Result<(), RenderError> {
        if self.format == Format::Csv {
            let mut writer = self.csv.from_writer(out);
            writer.write_record(FIELDS)?;
            writer.flush().map_err(csv::Error::from)?;
        }
        Ok(())
    }

    /// Appends `record` as one line to `out`.
    pub fn record(&self, record: &Record, out: &mut Vec<u8>) -> Result<(), RenderError> {
        match self.format {
            Format::Csv => {
                // The csv crate's writer owns what it writes to and offers
                // no way to empty it, so one is made per record, over
                // `out`; it costs one small buffer, on the writer thread.
                let mut writer = self.csv.from_writer(out);
                writer.serialize(record)?;
                writer.flush().map_err(csv::Error::from)?;
            }
            Format::Json => {
                serde_json::to_writer(&mut *out, record)?;
                out.push(b'\n');
            }
        }
        Ok(())
    }
}

/// A record that could not be rendered (not expected: every field is a
/// string or a number).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounce with every field given, and awkward text in some.
    fn bounce() -> Record {
        Record {
            orcpt: Some("rfc822;Bob@Example.com".into()),
            dsn_status: Some("5.1.1".into()),
            dsn_diag: Some("smtp;550-5.1.1 \"no\" such user,\r\n550 5.1.1 try again".into()),
            dsn_mta: Some("mx1.example.com".into()),
            bounce_cat: Some(BounceCategory::BadMailbox),
            src_mta: Some("client.example (192.0.2.7)".into()),
            dlv_source_ip: Some(IpAddr::from([203, 0, 113, 10])),
            dlv_destination_ip: "2001:db8::25".parse().ok(),
            dlv_esmtp_available: Some("PIPELINING,SIZE,8BITMIME".into()),
            dlv_size: Some(2048),
            vmta: Some("ip1".into()),
            vmta_pool: Some("newsletters".into()),
            job_id: Some("spring-sale".into()),
            env_id: Some("env-1".into()),
            ..Record::new(
                RecordType::Bounced,
                (1_700_000_100, 1_700_000_000),
                "news@sender.example".into(),
                "bob@example.com".into(),
                "0001000000002a3f".into(),
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
        let renderer = Renderer::new(format);
        let mut out = Vec::new();
        renderer.header(&mut out).unwrap_or_else(|e| panic!("{e}"));
        for record in records {
            renderer
                .record(record, &mut out)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        out
    }

    #[test]
    fn csv_reads_back_field_by_field() {
        let received = Record::new(
            RecordType::Received,
            (1_700_000_000, 1_700_000_000),
            String::new(),
            "bob@example.com".into(),
            "0001000000002a3f".into(),
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
        let plain = Record::new(
            RecordType::Delayed,
            (1, 0),
            "a@b".into(),
            "c@d".into(),
            "q".into(),
        );
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
            let record = Record::new(record_type, (0, 0), "a".into(), "b".into(), "q".into());
            let out = rendered(Format::Csv, &[record]);
            let line = out.split(|&b| b == b'\n').nth(1).unwrap_or_default();
            assert!(line.starts_with(format!("{letter},").as_bytes()));
        }
    }
}
