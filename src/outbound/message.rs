//! A message in flight on a connection: the job, and what its transaction
//! needs, copied out of the spool mapping into buffers reused from one
//! message to the next (so a transaction costs no allocation for its
//! envelope once the connection is warm).
//! Must never: hand out a message whose hold on the spool it has not
//! taken (compaction could move its bytes), or keep a recipient that is
//! no longer pending.

use spool_format::envelope::{flags, BodyType, ChunkRef, Ret as StoredRet};

use crate::dsn::{is_looping, DEFAULT_MAX_RECEIVED};
use crate::schedule::Job;
use crate::smtp::client::{Body, Ret, ServerReply, Transaction, TxRecipient};
use crate::spool::params::ret_of;
use crate::spool::ShardSpool;

type Range = (usize, usize);

pub(super) struct Current {
    pub job: Job,
    buf: Vec<u8>,
    reverse: Range,
    envid: Range,
    /// Per transaction recipient: address and ORCPT in `buf`, NOTIFY
    /// bits, and the recipient's index in the envelope.
    rcpts: Vec<(Range, Range, u8, u32)>,
    pub chunks: Vec<ChunkRef>,
    size: u64,
    body: Body,
    smtputf8: bool,
    ret: Option<Ret>,
}

/// What became of a job when it was loaded from the spool.
pub(super) enum Loaded {
    /// Held against compaction until settled.
    Ready(Box<Current>),
    /// Held, but never to be sent: it has been around a mail loop. Every
    /// recipient fails with the reply.
    Looping(Box<Current>, ServerReply),
    /// Nothing left to send: already finished.
    Nothing,
}

impl Current {
    fn empty(job: Job) -> Box<Current> {
        Box::new(Current {
            job,
            buf: Vec::new(),
            reverse: (0, 0),
            envid: (0, 0),
            rcpts: Vec::new(),
            chunks: Vec::new(),
            size: 0,
            body: Body::SevenBit,
            smtputf8: false,
            ret: None,
        })
    }

    fn push(&mut self, bytes: &[u8]) -> Range {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        (start, self.buf.len())
    }

    /// Runs `f` on this message's envelope as the client sends it.
    pub fn with_transaction<R>(&self, f: impl FnOnce(&Transaction<'_>) -> R) -> R {
        let mut rcpts = Vec::with_capacity(self.rcpts.len());
        f(&self.transaction(&mut rcpts))
    }

    fn transaction<'a>(&'a self, rcpts: &'a mut Vec<TxRecipient<'a>>) -> Transaction<'a> {
        let at = |(a, b): Range| &self.buf[a..b];
        rcpts.extend(
            self.rcpts
                .iter()
                .map(|&(addr, orcpt, notify, _)| TxRecipient {
                    address: at(addr),
                    notify,
                    orcpt: at(orcpt),
                }),
        );
        Transaction {
            reverse_path: at(self.reverse),
            recipients: rcpts,
            size: self.size,
            body: self.body,
            smtputf8: self.smtputf8,
            ret: self.ret,
            envid: at(self.envid),
        }
    }

    /// Some recipient asked for a success notice (NOTIFY=SUCCESS).
    pub fn wants_success_notice(&self) -> bool {
        self.rcpts
            .iter()
            .any(|r| r.2 & spool_format::envelope::notify::SUCCESS != 0)
    }

    /// The envelope index of the transaction's recipient `i`.
    pub fn rcpt_index(&self, i: usize) -> Option<u32> {
        self.rcpts.get(i).map(|r| r.3)
    }
}

impl Current {
    /// Copies what `job` needs out of the spool, into `spare`'s buffers
    /// if given; recipients that are no longer pending are dropped from
    /// it.
    pub fn load(spool: &ShardSpool, job: Job, spare: Option<Box<Current>>) -> Loaded {
        let mut cur = match spare {
            Some(mut c) => {
                c.job = job;
                c.buf.clear();
                c.rcpts.clear();
                c.chunks.clear();
                c
            }
            None => Current::empty(job),
        };
        let looping = spool.with_state(|s| {
            let m = s.index.messages.get(&cur.job.msg_id)?;
            let env = s.envelope(m.segment_id(), m.offset)?;
            cur.reverse = cur.push(&env.reverse_path);
            cur.envid = cur.push(&env.envid);
            // Recipients finished meanwhile (or unknown) leave the job.
            let mut rcpts = std::mem::take(&mut cur.job.rcpts);
            rcpts.retain(|&i| (i as usize) < env.recipients.len() && m.pending.contains(i));
            for &i in &rcpts {
                let r = &env.recipients[i as usize];
                let addr = cur.push(&r.address);
                let orcpt = cur.push(&r.orcpt);
                cur.rcpts.push((addr, orcpt, r.notify, i));
            }
            cur.job.rcpts = rcpts;
            cur.chunks.extend(env.body.iter().map(ChunkRef::from));
            cur.size = env.body_len.to_native();
            cur.body = Body::from(BodyType::from(env.body_type));
            cur.smtputf8 = env.flags.to_native() & flags::SMTPUTF8 != 0;
            cur.ret = ret_of(StoredRet::from(env.ret));
            let parts: Vec<&[u8]> = cur.chunks.iter().filter_map(|c| s.chunk(c)).collect();
            Some(is_looping(&parts, DEFAULT_MAX_RECEIVED))
        });
        match looping {
            None => Loaded::Nothing,
            Some(_) if cur.rcpts.is_empty() => Loaded::Nothing,
            Some(true) => {
                spool.hold(cur.job.msg_id);
                let why = format!("mail loop: more than {DEFAULT_MAX_RECEIVED} Received headers");
                Loaded::Looping(cur, ServerReply::local(554, (5, 4, 6), &why))
            }
            Some(false) => {
                spool.hold(cur.job.msg_id);
                Loaded::Ready(cur)
            }
        }
    }
}
