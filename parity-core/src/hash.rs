//! Block hashes: BLAKE3 keyed with the array's random key, first 16 bytes kept.

use crate::state::model::Hash;

/// The hash of one block's data (only the file's bytes: a last, partial block is
/// hashed without its zero padding).
pub fn block_hash(key: &[u8; 32], data: &[u8]) -> Hash {
    let full = blake3::keyed_hash(key, data);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_bytes()[..16]);
    out
}

/// A new random array key from the operating system.
pub fn random_key() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_key_and_data() {
        let a = block_hash(&[1; 32], b"block");
        assert_eq!(a, block_hash(&[1; 32], b"block"));
        assert_ne!(a, block_hash(&[2; 32], b"block"));
        assert_ne!(a, block_hash(&[1; 32], b"blocK"));
        assert_eq!(
            &a[..],
            &blake3::keyed_hash(&[1; 32], b"block").as_bytes()[..16]
        );
    }

    #[test]
    fn random_keys_differ() {
        let (a, b) = (
            random_key().expect("urandom"),
            random_key().expect("urandom"),
        );
        assert_ne!(a, b);
    }
}
