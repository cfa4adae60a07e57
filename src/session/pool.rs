//! The IP pool of a message being received, decided once its data is in
//! and before it is committed: the pool header (removed from the message
//! here, so it is never sent on), else the rules on the sender's domain,
//! the authenticated user and the listener, else the default pool.
//! Must never: let a message that names an unknown pool leave from another
//! pool's addresses unless `[pool_selection] unknown = "default"` says so,
//! or leave the pool header in a message it has read it from.

use spool_format::envelope::{pool_id, ChunkRef};

use crate::config::{Config, HeaderPool, PoolQuery};
use crate::smtp::header_field::{self, Piece};
use crate::spool::{ShardSpool, SpoolError};

/// Why a message gets no pool.
#[derive(Debug, thiserror::Error)]
pub enum NoPool {
    /// Its header names a pool there is none of: 550 5.7.0.
    #[error("the message names IP pool {0:?}, which is not configured")]
    Unknown(String),
    /// Its header could not be cut out: 451, as any spool failure.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The pool id the envelope records for a message whose body is
/// `chunks` (the first is this server's `Received:` line: this runs
/// before DKIM signing puts its fields above it), `len` bytes long; both
/// lose the pool header if it is there. 0 without sources.
pub fn choose(
    config: &Config,
    spool: &ShardSpool,
    query: PoolQuery<'_>,
    chunks: &mut Vec<ChunkRef>,
    len: &mut u64,
) -> Result<u16, NoPool> {
    if config.source.is_empty() {
        return Ok(0);
    }
    if let Some(name) = config.pool_selection.header_name() {
        if let Some(value) = cut_header(spool, name, chunks, len)? {
            let value = String::from_utf8_lossy(&value);
            return match config.header_pool(&value) {
                HeaderPool::Pool(pool) => Ok(pool_id(pool)),
                HeaderPool::Reject => Err(NoPool::Unknown(value.trim().to_owned())),
            };
        }
    }
    Ok(pool_id(config.pool_selection.pool_by_rules(query)))
}

/// Finds header field `name` after the first chunk and cuts every
/// occurrence out of the message; its first value if it was there.
fn cut_header(
    spool: &ShardSpool,
    name: &str,
    chunks: &mut Vec<ChunkRef>,
    len: &mut u64,
) -> Result<Option<Vec<u8>>, SpoolError> {
    let Some((received, rest)) = chunks.split_first() else {
        return Ok(None);
    };
    let found = spool.with_state(|s| {
        let parts: Vec<&[u8]> = rest.iter().filter_map(|c| s.chunk(c)).collect();
        if parts.len() != rest.len() {
            return None;
        }
        let found = header_field::find(&parts, name.as_bytes())?;
        let pieces = header_field::cut(&parts, &found.ranges);
        Some((found, pieces))
    });
    let Some((found, pieces)) = found else {
        return Ok(None);
    };
    let mut rebuilt = Vec::with_capacity(chunks.len());
    rebuilt.push(*received);
    for piece in pieces {
        match piece {
            Piece::Keep(i) => rebuilt.push(rest[i]),
            Piece::New(bytes) => super::dkim::append(spool, &bytes, &mut rebuilt)?,
        }
    }
    let removed: u64 = found.ranges.iter().map(|(a, b)| b - a).sum();
    *len = len.saturating_sub(removed);
    *chunks = rebuilt;
    Ok(Some(found.value))
}
