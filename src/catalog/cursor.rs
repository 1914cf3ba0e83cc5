//! Page cursors: the position to continue after, bound to the query it came from and signed,
//! so a client can neither forge a position nor carry a cursor over to other filters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the signature kept in a cursor.
const TAG_LEN: usize = 16;

/// The key cursors are signed with, derived from the service's token secret (every process
/// of a deployment shares it, so any of them continues a page another one started).
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    /// Derives the cursor key from `secret`.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
            // HMAC takes keys of any length.
            unreachable!("an HMAC key of any length is accepted")
        });
        mac.update(b"openrun:page-cursor");
        Self(mac.finalize().into_bytes().into())
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("an HMAC key of any length is accepted"));
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A cursor continuing after `position` for the query described by `query`.
    pub fn seal(&self, position: u64, query: &str) -> String {
        let mut body = position.to_be_bytes().to_vec();
        body.extend_from_slice(query.as_bytes());
        let tag = self.tag(&body);
        let mut out = position.to_be_bytes().to_vec();
        out.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The position of a cursor made by [`CursorKey::seal`] for the same `query`; `None` for
    /// anything else (tampered, truncated, or from other filters).
    pub fn open(&self, cursor: &str, query: &str) -> Option<u64> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if bytes.len() != 8 + TAG_LEN {
            return None;
        }
        let (position, tag) = bytes.split_at(8);
        let position = u64::from_be_bytes(position.try_into().ok()?);
        let mut body = position.to_be_bytes().to_vec();
        body.extend_from_slice(query.as_bytes());
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(&body);
        mac.verify_truncated_left(tag).ok()?;
        Some(position)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_unchanged_and_for_its_own_query() {
        let key = CursorKey::derive(b"secret");
        let cursor = key.seal(42, "status=on_sale");
        assert_eq!(key.open(&cursor, "status=on_sale"), Some(42));
        assert_eq!(key.open(&cursor, "status=ended"), None);
        assert_eq!(
            CursorKey::derive(b"other").open(&cursor, "status=on_sale"),
            None
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        bytes[7] ^= 1;
        assert_eq!(
            key.open(&URL_SAFE_NO_PAD.encode(&bytes), "status=on_sale"),
            None
        );
        assert_eq!(key.open("not a cursor", "status=on_sale"), None);
        assert_eq!(
            key.open(&cursor[..cursor.len() - 2], "status=on_sale"),
            None
        );
    }
}
