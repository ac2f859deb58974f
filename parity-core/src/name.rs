//! Names of files, links and folders on the data disks, as the state holds them.
//!
//! A Linux file name is any bytes but `/` and NUL; most are UTF-8, but names copied
//! from old systems (Latin-1, say) are not, and they must be protected like any
//! other. The state keeps names as text: a valid UTF-8 name is itself, and every
//! byte that is not part of valid UTF-8 is held as one character of the private-use
//! range U+10FF00..=U+10FFFF (the byte is its low 8 bits). A name that really
//! contains a character of that range (no known script uses it) has that
//! character's bytes held the same way, so every byte string comes back exactly.
//!
//! The content file stores the bytes themselves ([`to_bytes`], [`from_bytes`]); the
//! file system is reached through [`join`]; messages and listings show such bytes
//! as `\xNN` ([`shown`]).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The first character of the range that holds single bytes.
const BASE: u32 = 0x10_FF00;
/// The first UTF-8 byte of every character of that range (and of a few others).
const LEAD: u8 = 0xF4;

/// Whether `c` is one of the characters that hold a single byte.
pub(crate) fn holds_byte(c: char) -> bool {
    u32::from(c) & !0xFF == BASE
}

/// The character that holds byte `b`.
pub(crate) fn byte_char(b: u8) -> char {
    char::from_u32(BASE | u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Whether `text` has a character of the range that holds single bytes (the byte
/// search first: almost no name has one of their lead bytes).
fn has_byte_chars(text: &str) -> bool {
    text.as_bytes().contains(&LEAD) && text.chars().any(holds_byte)
}

/// The name the state holds for the bytes of a name (or link target) on a disk.
pub fn from_bytes(raw: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(raw) {
        if !has_byte_chars(text) {
            return Cow::Borrowed(text);
        }
    }
    let mut name = String::with_capacity(raw.len() + 8);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if holds_byte(c) {
                let mut utf8 = [0u8; 4];
                name.extend(c.encode_utf8(&mut utf8).bytes().map(byte_char));
            } else {
                name.push(c);
            }
        }
        name.extend(chunk.invalid().iter().copied().map(byte_char));
    }
    Cow::Owned(name)
}

/// [`from_bytes`] for a name read from the file system.
pub fn from_os(raw: &OsStr) -> Cow<'_, str> {
    from_bytes(raw.as_bytes())
}

/// The bytes of a name the state holds, as they are on the disk.
pub fn to_bytes(name: &str) -> Cow<'_, [u8]> {
    if !has_byte_chars(name) {
        return Cow::Borrowed(name.as_bytes());
    }
    let mut raw = Vec::with_capacity(name.len());
    for c in name.chars() {
        if holds_byte(c) {
            raw.push(u32::from(c) as u8);
        } else {
            let mut utf8 = [0u8; 4];
            raw.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    Cow::Owned(raw)
}

/// A name the state holds as the file system's name (a link target, say).
pub fn to_os(name: &str) -> Cow<'_, OsStr> {
    match to_bytes(name) {
        Cow::Borrowed(b) => Cow::Borrowed(OsStr::from_bytes(b)),
        Cow::Owned(b) => Cow::Owned(OsString::from_vec(b)),
    }
}

/// The path of a name the state holds (relative to a disk root) under `root`.
pub fn join(root: &Path, name: &str) -> PathBuf {
    root.join(to_os(name))
}

/// A name the state holds as one line of text for people and scripts: bytes that
/// are not UTF-8 as `\xNN`, control characters as `\n`, `\t`, `\r` or `\xNN`
/// (each byte of their UTF-8), a backslash as `\\`, and the `>` of ` -> ` (which
/// listings put between a link and its target) as `\x3e`, so that every name and
/// every listing line reads back one way.
pub fn shown(name: &str) -> Cow<'_, str> {
    use std::fmt::Write;
    // C1 control characters (U+0080..U+009F) start with 0xC2.
    let plain = |b: u8| b != LEAD && b != 0xC2 && b != b'\\' && b >= 0x20 && b != 0x7f;
    if name.bytes().all(plain) && !name.contains(" -> ") {
        return Cow::Borrowed(name);
    }
    // Overlapping too: in `a -> -> b` both arrows are escaped.
    let arrow = |at: usize| at >= 2 && name.as_bytes()[at - 2..].starts_with(b" -> ");
    let mut text = String::with_capacity(name.len() + 8);
    for (at, c) in name.char_indices() {
        match c {
            '>' if arrow(at) => text.push_str("\\x3e"),
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '\t' => text.push_str("\\t"),
            '\r' => text.push_str("\\r"),
            c if holds_byte(c) => {
                let _ = write!(text, "\\x{:02x}", u32::from(c) as u8);
            }
            c if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(text, "\\x{b:02x}");
                }
            }
            c => text.push(c),
        }
    }
    Cow::Owned(text)
}

/// A path (a data disk's folder joined with a name the state holds) as [`shown`]
/// shows the name, for messages: every path prints on one line, and a byte that is
/// not UTF-8 shows as itself (`\xe9`) instead of a replacement character.
pub fn shown_path<P: AsRef<Path> + ?Sized>(path: &P) -> String {
    shown(&from_os(path.as_ref().as_os_str())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_are_held_as_they_are() {
        for name in [
            "plain",
            "café/ünï",
            "new\nline",
            "emoji 😀",
            "\u{10FEFF}",
            "",
        ] {
            assert!(matches!(from_bytes(name.as_bytes()), Cow::Borrowed(n) if n == name));
            assert!(matches!(to_bytes(name), Cow::Borrowed(b) if b == name.as_bytes()));
            assert_eq!(shown(name) == name, !name.contains('\n'), "{name:?}");
        }
    }

    #[test]
    fn other_bytes_come_back_exactly() {
        let cases: [&[u8]; 6] = [
            b"caf\xe9.txt",
            b"\xff\xfe",
            b"dir\xc3/\xa9x",
            // A character of the range itself, and its bytes alone.
            "a\u{10FF41}b".as_bytes(),
            b"\xf4\x8f\xbd",
            b"\xf4\x8f\xbc\x80\xf4",
        ];
        for raw in cases {
            let name = from_bytes(raw);
            assert!(std::str::from_utf8(name.as_bytes()).is_ok());
            assert_eq!(to_bytes(&name).as_ref(), raw, "{raw:?} held as {name:?}");
            assert_eq!(
                join(Path::new("/d"), &name).as_os_str().as_bytes()[3..],
                *raw
            );
        }
        // Every byte value, alone and after a valid character.
        for b in 0u8..=255 {
            for raw in [vec![b], vec![b'x', b, b'y'], vec![0xC3, b]] {
                assert_eq!(to_bytes(&from_bytes(&raw)).as_ref(), raw.as_slice());
            }
        }
    }

    #[test]
    fn distinct_names_stay_distinct() {
        let a = from_bytes(b"\xe9");
        let b = from_bytes("\u{10FFE9}".as_bytes());
        let c = from_bytes("é".as_bytes());
        assert!(a != b && b != c && a != c, "{a:?} {b:?} {c:?}");
    }

    #[test]
    fn names_are_shown_on_one_line_and_read_back_one_way() {
        assert_eq!(shown(&from_bytes(b"caf\xe9.txt")), "caf\\xe9.txt");
        assert_eq!(shown(&from_bytes(b"\xff/\xfe")), "\\xff/\\xfe");
        assert_eq!(
            shown("new\nline\ttab\r\x01\x7f"),
            "new\\nline\\ttab\\r\\x01\\x7f"
        );
        // A real backslash cannot be taken for an escape.
        assert_eq!(shown("caf\\xe9.txt"), "caf\\\\xe9.txt");
        assert_ne!(shown("caf\\xe9.txt"), shown(&from_bytes(b"caf\xe9.txt")));
        assert!(matches!(shown("plain é 😀"), Cow::Borrowed(_)));
        assert_eq!(shown("a\u{85}b\u{9b}2J"), "a\\xc2\\x85b\\xc2\\x9b2J");
        assert_eq!(shown("\u{a0}x"), "\u{a0}x");
        assert_eq!(shown("a -> b -> c"), "a -\\x3e b -\\x3e c");
        assert_eq!(shown("a->b"), "a->b");
        assert!(!shown("a -> -> b").contains(" -> "));
    }
}
