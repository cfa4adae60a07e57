//! DKIM-signing a message at reception: once its data is in and its pool
//! header cut out (so the signature covers the message as it will be
//! sent), and before the commit that makes it durable, so the signature
//! is stored with the message: the same for every recipient and attempt,
//! and unchanged by a restart.
//! Must never: refuse a message because it could not be signed (it goes
//! unsigned, logged and counted), or sign a message no key matches.

use spool_format::envelope::ChunkRef;

use super::SessionContext;
use crate::dkim::{message, SignError, SignerTable};
use crate::helper_pool::{HelperPool, RanOn};
use crate::spool::{ShardSpool, SpoolError};

/// Puts the `DKIM-Signature` fields of the message made of `chunks` (the
/// first is this server's `Received:` line), `len` bytes long, in a chunk
/// above all others: signed here, or with `[signing] threads` the key
/// operations on those threads. An error only when the spool refused
/// that chunk.
pub async fn sign(
    ctx: &SessionContext,
    msg_id: u64,
    chunks: &mut Vec<ChunkRef>,
    len: &mut u64,
) -> Result<(), SpoolError> {
    let signed = match crate::signing_threads::running() {
        None => with_message(ctx, chunks, message::sign),
        Some(pool) => on_threads(ctx, pool, chunks).await,
    };
    let fields = match signed {
        Ok(Some(fields)) => fields,
        Ok(None) => return Ok(()),
        Err(why) => {
            let id = ctx.display_id(msg_id);
            tracing::error!(id = id.as_str(), error = %why, "DKIM signing failed; the message goes unsigned");
            ctx.metrics.dkim_failed.increment(1);
            return Ok(());
        }
    };
    let mut signed_chunks = Vec::with_capacity(chunks.len() + 1);
    append(&ctx.spool, fields.as_bytes(), &mut signed_chunks)?;
    signed_chunks.extend_from_slice(chunks);
    *chunks = signed_chunks;
    *len += fields.len() as u64;
    ctx.metrics.dkim_signed.increment(1);
    Ok(())
}

/// The message prepared here and its keys used on `pool`; on this shard
/// when the pool's queue is full (counted).
async fn on_threads(
    ctx: &SessionContext,
    pool: &HelperPool,
    chunks: &[ChunkRef],
) -> Result<Option<String>, String> {
    let Some(prepared) = with_message(ctx, chunks, message::prepare)? else {
        return Ok(None);
    };
    let (signed, ran_on) = crate::signing_threads::sign(pool, prepared).await;
    if let RanOn::Caller(_) = ran_on {
        ctx.metrics.dkim_on_shard.increment(1);
    }
    signed.map(Some).map_err(|e| e.to_string())
}

/// `f` of the DKIM signers in force, the message's chunks as the spool
/// holds them, and the time; `None` without signers.
fn with_message<R>(
    ctx: &SessionContext,
    chunks: &[ChunkRef],
    f: impl FnOnce(&SignerTable, &[&[u8]], u64) -> Result<Option<R>, SignError>,
) -> Result<Option<R>, String> {
    ctx.with_dkim(|table| {
        if table.is_empty() {
            return Ok(None);
        }
        let now = ctx.clock.wall_ms() / 1000;
        ctx.spool.with_state(|s| {
            let parts: Vec<&[u8]> = chunks.iter().filter_map(|c| s.chunk(c)).collect();
            match parts.len() == chunks.len() {
                true => f(table, &parts, now).map_err(|e| e.to_string()),
                false => Err("a chunk of the message could not be read".to_owned()),
            }
        })
    })
}

/// Appends `bytes` to the spool as chunks of at most its chunk size, and
/// their references to `out`.
pub fn append(spool: &ShardSpool, bytes: &[u8], out: &mut Vec<ChunkRef>) -> Result<(), SpoolError> {
    for part in bytes.chunks(spool.max_chunk()) {
        out.push(spool.append_chunk(part)?);
    }
    Ok(())
}
