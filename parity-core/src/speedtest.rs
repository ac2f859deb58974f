//! The parity speed test behind `lhparity speedtest`: how fast each available kernel
//! generates and recovers, measured the way `snapraid -T` does (one thread, a stripe
//! that stays in cache, MB/s of data bytes), so users can compare on their own CPU.

use std::time::{Duration, Instant};

use crate::raid::{self, Kernel, RaidError, MAX_PARITY};

/// One measured operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Generate this many parity levels.
    Gen(usize),
    /// Rebuild this many lost data blocks.
    Rec(usize),
}

impl Op {
    /// gen1..gen6 then rec1..rec6.
    pub fn all() -> Vec<Op> {
        let levels = 1..=MAX_PARITY;
        levels
            .clone()
            .map(Op::Gen)
            .chain(levels.map(Op::Rec))
            .collect()
    }

    /// `gen3`, `rec6`, ...
    pub fn name(self) -> String {
        match self {
            Op::Gen(n) => format!("gen{n}"),
            Op::Rec(n) => format!("rec{n}"),
        }
    }
}

/// The shape of the test stripe.
#[derive(Copy, Clone, Debug)]
pub struct Shape {
    pub disks: usize,
    pub block_size: usize,
}

impl Default for Shape {
    /// 8 data blocks of 256 KiB, as `snapraid -T`.
    fn default() -> Self {
        Shape {
            disks: 8,
            block_size: 256 * 1024,
        }
    }
}

/// Runs `op` with `kernel` repeatedly for at least `period` and returns MB/s
/// (10^6 bytes per second) of data: `disks x block_size` bytes per operation.
///
/// Recovery loses data disks `0..n`. Like `snapraid -T`, one lost block is rebuilt from
/// level 2 (Q) and two from levels 2 and 3, so that the plain-XOR case of level 1 does
/// not flatter the figure; three or more use levels 1..=n.
pub fn measure(kernel: Kernel, op: Op, shape: Shape, period: Duration) -> Result<f64, RaidError> {
    let Shape { disks, block_size } = shape;
    // Blocks at a small odd displacement from each other, so they do not all map to the
    // same cache sets.
    let stride = block_size + 1792;
    let mut buf = vec![0u8; stride * (disks + MAX_PARITY) + 64];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    // Cache-line aligned blocks, as `snapraid -T` uses: the kernels then write
    // parity with non-temporal stores.
    let skew = buf.as_ptr().align_offset(64).min(63);
    let mut blocks: Vec<&mut [u8]> = buf[skew..]
        .chunks_mut(stride)
        .take(disks + MAX_PARITY)
        .map(|c| &mut c[..block_size])
        .collect();
    let run = |blocks: &mut Vec<&mut [u8]>| -> Result<(), RaidError> {
        match op {
            Op::Gen(np) => {
                let (data, parity) = blocks.split_at_mut(disks);
                let data: Vec<&[u8]> = data.iter().map(|b| &**b).collect();
                raid::generate_with(kernel, &data, &mut parity[..np])
            }
            Op::Rec(n) => {
                let lost: Vec<usize> = (0..n).collect();
                let levels: Vec<usize> = match n {
                    1 | 2 => (1..=n).collect(),
                    _ => (0..n).collect(),
                };
                raid::recover_data_with(kernel, disks, &lost, &levels, blocks)
            }
        }
    };
    // One untimed run: page faults and table setup are not what is measured.
    run(&mut blocks)?;
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..10 {
            run(&mut blocks)?;
        }
        count += 10;
        let elapsed = start.elapsed();
        if elapsed >= period {
            let bytes = (disks * block_size) as f64 * count as f64;
            return Ok(bytes / elapsed.as_secs_f64() / 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_measures_a_positive_rate() {
        let shape = Shape {
            disks: 6,
            block_size: 4096,
        };
        for op in Op::all() {
            let mbps = measure(Kernel::Scalar, op, shape, Duration::from_millis(2))
                .unwrap_or_else(|e| panic!("{}: {e}", op.name()));
            assert!(mbps.is_finite() && mbps > 0.0, "{}: {mbps}", op.name());
        }
        assert_eq!(
            Op::all()
                .iter()
                .map(|o| o.name())
                .collect::<Vec<_>>()
                .join(" "),
            "gen1 gen2 gen3 gen4 gen5 gen6 rec1 rec2 rec3 rec4 rec5 rec6"
        );
    }
}
