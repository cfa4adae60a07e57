//! DKIM-signing a message at reception: once its data is in and its pool
//! header cut out (so the signature covers the message as it will be
//! sent), and before the commit that makes it durable, so the signature
//! is stored with the message: the same for every recipient and attempt,
//! and unchanged by a restart.
//! Must never: refuse a message because it could not be signed (it goes
//! unsigned, logged and counted), or sign a message no key matches.

use spool_format::envelope::ChunkRef;

use super::SessionContext;
use crate::spool::{ShardSpool, SpoolError};

/// Puts the `DKIM-Signature` fields of the message made of `chunks` (the
/// first is this server's `Received:` line), `len` bytes long, in a chunk
/// above all others. An error only when the spool refused that chunk.
pub fn sign(
    ctx: &SessionContext,
    msg_id: u64,
    chunks: &mut Vec<ChunkRef>,
    len: &mut u64,
) -> Result<(), SpoolError> {
    let signed = ctx.with_dkim(|table| {
        if table.is_empty() {
            return Ok(None);
        }
        let now = ctx.clock.wall_ms() / 1000;
        ctx.spool.with_state(|s| {
            let parts: Vec<&[u8]> = chunks.iter().filter_map(|c| s.chunk(c)).collect();
            match parts.len() == chunks.len() {
                true => crate::dkim::message::sign(table, &parts, now).map_err(|e| e.to_string()),
                false => Err("a chunk of the message could not be read".to_owned()),
            }
        })
    });
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

/// Appends `bytes` to the spool as chunks of at most its chunk size, and
/// their references to `out`.
pub fn append(spool: &ShardSpool, bytes: &[u8], out: &mut Vec<ChunkRef>) -> Result<(), SpoolError> {
    for part in bytes.chunks(spool.max_chunk()) {
        out.push(spool.append_chunk(part)?);
    }
    Ok(())
}
