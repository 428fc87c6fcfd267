//! How a file is cut into parts, and one part to send.

use crate::limits::Limits;

/// How a file is cut into parts: every part `part_size` bytes but the last, which may be
/// shorter. Validated against the service's [`Limits`] before any request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    file_size: u64,
    part_size: u64,
    count: u32,
}

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
        })
    }

    /// The size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The size of every part but the last.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// How many parts there are (at least one).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Part `index` as a first attempt, or `None` past the last part.
    pub fn part(&self, index: u32) -> Option<PartJob> {
        (index < self.count).then(|| {
            let offset = u64::from(index) * self.part_size;
            PartJob {
                index,
                offset,
                len: self.part_size.min(self.file_size.saturating_sub(offset)),
                attempt: 1,
            }
        })
    }

    /// Every part in file order, as first attempts.
    pub fn parts(&self) -> impl Iterator<Item = PartJob> + use<> {
        let plan = *self;
        (0..plan.count).filter_map(move |index| plan.part(index))
    }

    /// The length of part `index` (0 past the last part).
    pub(crate) fn part_len(&self, index: u32) -> u64 {
        self.part(index).map_or(0, |part| part.len)
    }
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
