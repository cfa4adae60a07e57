//! How the envelope parameters of SMTP (`BODY=`, `RET=`) are kept in a
//! spooled envelope, and read back: the one mapping between the protocol
//! machines' types and the stored bytes of `spool-format`, used when a
//! message is received and when it is sent on or bounced.
//! Must never: give a byte the format does not define (old readers would
//! take it as unspecified).

use spool_format::envelope::{BodyType, Ret as StoredRet};

use crate::smtp::params::{Body, Ret};

impl From<Body> for BodyType {
    fn from(body: Body) -> BodyType {
        match body {
            Body::SevenBit => BodyType::SevenBit,
            Body::EightBitMime => BodyType::EightBitMime,
            Body::BinaryMime => BodyType::BinaryMime,
        }
    }
}

impl From<BodyType> for Body {
    /// An unspecified body type is 7BIT (RFC 6152).
    fn from(body: BodyType) -> Body {
        match body {
            BodyType::Unspecified | BodyType::SevenBit => Body::SevenBit,
            BodyType::EightBitMime => Body::EightBitMime,
            BodyType::BinaryMime => Body::BinaryMime,
        }
    }
}

/// The stored form of a `RET=` parameter, given or not.
pub fn stored_ret(ret: Option<Ret>) -> StoredRet {
    match ret {
        None => StoredRet::Unspecified,
        Some(Ret::Full) => StoredRet::Full,
        Some(Ret::Headers) => StoredRet::Headers,
    }
}

/// The `RET=` parameter a stored envelope asks to pass on, if any.
pub fn ret_of(stored: StoredRet) -> Option<Ret> {
    match stored {
        StoredRet::Unspecified => None,
        StoredRet::Full => Some(Ret::Full),
        StoredRet::Headers => Some(Ret::Headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_survive_the_round_trip_through_their_stored_bytes() {
        for body in [Body::SevenBit, Body::EightBitMime, Body::BinaryMime] {
            let byte = u8::from(BodyType::from(body));
            assert_eq!(Body::from(BodyType::from(byte)), body);
        }
        for ret in [None, Some(Ret::Full), Some(Ret::Headers)] {
            let byte = u8::from(stored_ret(ret));
            assert_eq!(ret_of(StoredRet::from(byte)), ret);
        }
        assert_eq!(Body::from(BodyType::from(0)), Body::SevenBit);
    }
}
