//! The scalar path against parity made by SnapRAID 12.2 itself.

use parity_core::raid::{generate_with, Kernel, GENERATOR, MAX_DATA, MAX_PARITY};
use std::path::PathBuf;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
fn generator_matrix_equals_snapraid_table() {
    let text = std::fs::read_to_string(vectors().join("snapraid-matrix.txt")).expect("matrix file");
    let rows: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| l.starts_with("level"))
        .map(|l| {
            let (_, hex) = l.split_once(':').expect("level line has a colon");
            hex.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), MAX_PARITY);
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), MAX_DATA, "level {}", r + 1);
        assert_eq!(row.as_slice(), &GENERATOR[r][..], "level {}", r + 1);
    }
}

/// Byte k of the file on disk d (1-based), as documented with the vectors.
fn vector_byte(d: usize, k: usize) -> u8 {
    ((d * 37 + k * 13 + (k >> 8) * 7) & 0xff) as u8
}

#[test]
fn scalar_path_reproduces_snapraid_parity_at_all_six_levels() {
    const BLOCK: usize = 1024;
    const POSITIONS: usize = 4;
    let dir = vectors().join("snapraid-6p-5d");
    let sizes = [4096usize, 3500, 4096, 1024, 2049];
    // Each disk holds one file from position 0; past its end the disk counts as zeros.
    let disks: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let bytes = std::fs::read(dir.join(format!("f{}.bin", i + 1))).expect("data file");
            assert_eq!(bytes.len(), size);
            for (k, &b) in bytes.iter().enumerate() {
                assert_eq!(b, vector_byte(i + 1, k), "f{}.bin byte {k}", i + 1);
            }
            let mut padded = bytes;
            padded.resize(BLOCK * POSITIONS, 0);
            padded
        })
        .collect();
    let want: Vec<Vec<u8>> = (1..=6)
        .map(|l| std::fs::read(dir.join(format!("parity{l}.bin"))).expect("parity file"))
        .collect();

    for np in 1..=6 {
        let mut got = vec![vec![0u8; BLOCK * POSITIONS]; np];
        for pos in 0..POSITIONS {
            let range = pos * BLOCK..(pos + 1) * BLOCK;
            let data: Vec<&[u8]> = disks.iter().map(|d| &d[range.clone()]).collect();
            let mut parity: Vec<&mut [u8]> =
                got.iter_mut().map(|p| &mut p[range.clone()]).collect();
            generate_with(Kernel::Scalar, &data, &mut parity).expect("generate");
        }
        for (level, bytes) in got.iter().enumerate() {
            assert!(
                bytes == &want[level],
                "{np} parity levels: level {} differs from parity{}.bin",
                level + 1,
                level + 1
            );
        }
    }
}
