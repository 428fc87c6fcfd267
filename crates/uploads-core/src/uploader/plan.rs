//! How a file is cut into parts, and one part to send.

use crate::limits::{Limits, MIB};

/// How a file is cut into parts. Validated against the service's [`Limits`] before any
/// request is sent.
///
/// * A **fixed** plan ([`PartPlan::new`]): every part `part_size` bytes but the last, which
///   may be shorter; all parts are known before the first is sent.
/// * An **adaptive** plan ([`PartPlan::adaptive`]): each part is cut from the rest of the
///   file when a part may start ([`PartPlan::cut_len`]), so that every part in flight has
///   about [`ROUNDS_PER_CONNECTION`] parts of what is left. Parts shrink as the file runs
///   out, and the last round is short on the wire and at the service (which hashes each
///   part as it comes in): a tail of one 64 MiB part on one connection while the others sit
///   idle is what a fixed plan ends with. While the service throttles, parts are cut as
///   large as keeps every part in flight busy to the end (one round, not two), so the same
///   bytes take fewer requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    file_size: u64,
    /// Every part's size (fixed), or the largest part (adaptive).
    part_size: u64,
    /// How many parts (fixed), or the fewest the file can be (adaptive).
    count: u32,
    adaptive: bool,
    /// The most parts the service takes in one Upload.
    max_parts: u64,
}

/// How many parts an adaptive plan gives each part in flight from what is left: the last
/// round (where parts finish unevenly and some connections sit idle) is then about a quarter
/// of the time left at most, and shrinks with it.
pub const ROUNDS_PER_CONNECTION: u64 = 2;
/// The smallest part an adaptive plan cuts (but the file's last bytes): below it a request's
/// round trip and bookkeeping cost more than the shorter tail saves.
pub const MIN_CUT: u64 = MIB;

/// Why a file cannot be cut into parts as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A part must hold at least one byte.
    #[error("part size must be at least 1 byte")]
    ZeroPartSize,
    /// The part size is over the service's part limit.
    #[error("part size {part_size} is over the part limit of {max} bytes")]
    PartTooLarge {
        /// The part size asked for.
        part_size: u64,
        /// The largest part the service accepts.
        max: u64,
    },
    /// The file is over the service's upload limit.
    #[error("file size {file_size} is over the upload limit of {max} bytes")]
    FileTooLarge {
        /// The file's size.
        file_size: u64,
        /// The largest Upload the service accepts.
        max: u64,
    },
    /// More parts than the service accepts in one Upload.
    #[error(
        "the file would need {count} parts, over the limit of {max}: use parts of at least \
         {smallest_part_size} bytes"
    )]
    TooManyParts {
        /// How many parts the plan would need.
        count: u64,
        /// The most parts the service accepts in one Upload.
        max: u64,
        /// The smallest part size that cuts the file into at most `max` parts.
        smallest_part_size: u64,
    },
}

impl PartPlan {
    /// Plans `file_size` bytes in parts of `part_size`. A zero-byte file is one empty part,
    /// because the service refuses to complete an Upload with no parts.
    pub fn new(file_size: u64, part_size: u64, limits: &Limits) -> Result<Self, PlanError> {
        if part_size == 0 {
            return Err(PlanError::ZeroPartSize);
        }
        if part_size > limits.max_part_bytes {
            return Err(PlanError::PartTooLarge {
                part_size,
                max: limits.max_part_bytes,
            });
        }
        if file_size > limits.max_upload_bytes {
            return Err(PlanError::FileTooLarge {
                file_size,
                max: limits.max_upload_bytes,
            });
        }
        let count = file_size.div_ceil(part_size).max(1);
        let max = limits.max_parts_per_upload.min(u64::from(u32::MAX));
        if count > max {
            return Err(PlanError::TooManyParts {
                count,
                max,
                smallest_part_size: file_size.div_ceil(max.max(1)),
            });
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(Self {
            file_size,
            part_size,
            count,
            adaptive: false,
            max_parts: max,
        })
    }

    /// Plans `file_size` bytes in parts cut as the upload goes (see the [type's
    /// docs](Self)), none over `limits.max_part_bytes`, never more than
    /// `limits.max_parts_per_upload`.
    pub fn adaptive(file_size: u64, limits: &Limits) -> Result<Self, PlanError> {
        let largest = limits.max_part_bytes.max(1);
        let fewest = Self::new(file_size, largest, limits)?;
        Ok(Self {
            adaptive: true,
            ..fewest
        })
    }

    /// Whether parts are cut as the upload goes.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// How long the next part is, cut from the `remaining` bytes of the file after
    /// `parts_cut` parts, the parts in flight having `in_flight_left` bytes still to send,
    /// for `hint`. A fixed plan's parts are always `part_size` (the last one shorter).
    ///
    /// An adaptive plan gives each part in flight [`ROUNDS_PER_CONNECTION`] parts of what is
    /// left, but none under `hint.min_len` (a part's round trip must not cost more than the
    /// shorter tail saves), and in the last round no more than an even share of all that is
    /// left to send, in flight or not: a connection that frees up early takes less, so that
    /// all of them finish together.
    pub fn cut_len(
        &self,
        remaining: u64,
        in_flight_left: u64,
        parts_cut: u64,
        hint: &CutHint,
    ) -> u64 {
        if !self.adaptive {
            return self.part_size.min(remaining);
        }
        let level = u64::from(hint.level.max(1));
        let rounds = remaining.div_ceil(level.saturating_mul(ROUNDS_PER_CONNECTION));
        let even_share = remaining.saturating_add(in_flight_left).div_ceil(level);
        let wanted = if hint.throttled {
            // As few requests as keep every part in flight busy to the end: one round.
            even_share.div_ceil(MIB).saturating_mul(MIB).max(MIN_CUT)
        } else {
            rounds
                .max(hint.min_len)
                .min(even_share)
                .div_ceil(MIB)
                .saturating_mul(MIB)
                .max(MIN_CUT)
        };
        // Never so small that the rest would need more parts than the service takes.
        let parts_left = self.max_parts.saturating_sub(parts_cut).max(1);
        let len = wanted
            .max(remaining.div_ceil(parts_left))
            .min(self.part_size);
        // No sliver left behind for a request of its own.
        if remaining.saturating_sub(len) < MIN_CUT / 2 && remaining <= self.part_size {
            remaining
        } else {
            len.min(remaining)
        }
    }

    /// The size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The size of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// How many parts there are (at least one); for an adaptive plan, the fewest there can
    /// be (parts of the largest size).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Part `index` of a fixed plan as a first attempt, or `None` past the last part (and
    /// for an adaptive plan, whose parts are cut as the upload goes).
    pub fn part(&self, index: u32) -> Option<PartJob> {
        (index < self.count && !self.adaptive).then(|| {
            let offset = u64::from(index) * self.part_size;
            PartJob {
                index,
                offset,
                len: self.part_size.min(self.file_size.saturating_sub(offset)),
                attempt: 1,
            }
        })
    }

    /// Every part of a fixed plan in file order, as first attempts (none for an adaptive
    /// plan).
    pub fn parts(&self) -> impl Iterator<Item = PartJob> + use<> {
        let plan = *self;
        (0..plan.count).filter_map(move |index| plan.part(index))
    }
}

/// What an adaptive plan cuts the next part for (see [`PartPlan::cut_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutHint {
    /// How many parts may be in flight.
    pub level: u32,
    /// Whether the service throttled lately: parts are then cut in one round of what is left,
    /// not two.
    pub throttled: bool,
    /// The smallest part worth a request of its own on this path (what one part in flight
    /// carries in a few round trips), 0 if not known yet.
    pub min_len: u64,
}

impl CutHint {
    /// One part at a time, nothing known about the path.
    pub const NONE: Self = Self {
        level: 1,
        throttled: false,
        min_len: 0,
    };
}

/// One part to send: `len` bytes of the file from `offset`, as attempt number `attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartJob {
    /// The part's position in the file, from 0; report results under this index.
    pub index: u32,
    /// Where the part's bytes start in the file.
    pub offset: u64,
    /// How many bytes the part holds (0 only for the one part of an empty file).
    pub len: u64,
    /// Which attempt this is for the part, from 1.
    pub attempt: u32,
}
