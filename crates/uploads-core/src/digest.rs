//! The md5 an Upload's complete request carries: computed by clients over the file, and by
//! services over the listed Parts.

use md5::{Digest, Md5};

/// An md5 computed incrementally.
#[derive(Debug, Clone, Default)]
pub struct Md5Hasher(Md5);

impl Md5Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes, in file order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }

    /// The digest as the lower-case hex the complete request carries.
    pub fn finish_hex(self) -> String {
        to_hex(&self.finish())
    }

    /// The hasher's state as bytes to keep (in a database, beside the Upload): MD5's four
    /// words, the count of 64-byte blocks hashed, and the partial block not yet hashed.
    /// [`Md5Hasher::restore`] continues from it, on any machine.
    pub fn save(&self) -> Vec<u8> {
        use md5::digest::common::hazmat::SerializableState;
        self.0.serialize().to_vec()
    }

    /// A hasher continuing from [`Md5Hasher::save`]'s bytes; `None` for bytes that are not
    /// one (of another length, or a partial block that does not fit).
    pub fn restore(saved: &[u8]) -> Option<Self> {
        use md5::digest::common::hazmat::{SerializableState, SerializedState};
        let saved = SerializedState::<Md5>::try_from(saved).ok()?;
        Md5::deserialize(&saved).ok().map(Self)
    }
}

/// Lower-case hex of a digest.
pub fn to_hex(digest: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    digest
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A digest from 32 hex digits (either case); `None` for anything else.
pub fn parse_hex(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0; 16];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

/// A service's md5 computed ahead of the complete request: Parts are hashed in the order
/// their requests started, while the upload goes on, so that a complete whose listed order
/// matches (what a client sending parts in order causes) needs no second pass over the bytes.
///
/// An md5 cannot be combined from per-part digests: the digest of part k depends on every
/// byte before it. So the chain guesses the file order, and keeps the hash state after each
/// Part it hashed; at complete, the longest prefix of the listed order that the chain hashed
/// is reused and only the rest is read again. The guess is the Part's position when its
/// request names one ([`crate::api::PART_INDEX_HEADER`], which this workspace's clients send:
/// parts sent in parallel reach a server in any order), else the order requests started in.
///
/// ```text
/// slot_started(p) ──▶ Pending ── slot_committed(p) ──▶ Committed ── next_to_hash / hashed ──▶ in the chain
///                        └────── slot_failed(p) ─────▶ Dead (skipped)
/// ```
///
/// Sans-IO: the caller reads the Parts' bytes, and [`Md5Chain::next_to_hash`] /
/// [`Md5Chain::hashed`] hand the hashing back and forth.
#[derive(Debug, Clone, Default)]
pub struct Md5Chain {
    /// Every Part in chain order (its position, else the order it was started in), with its
    /// position and what became of it.
    slots: Vec<(crate::types::PartId, Option<u32>, Slot)>,
    /// The position the chain hashes next (one past the last positioned Part hashed).
    next_position: u32,
    /// How many leading slots the chain has consumed (hashed or skipped).
    consumed: usize,
    /// The Parts hashed so far, in chain order, each with the hash state after it.
    states: Vec<(crate::types::PartId, Md5Hasher)>,
    /// Whether a Part was handed out by `next_to_hash` and not yet returned.
    hashing: bool,
}

/// What became of a started Part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    Committed,
    Dead,
}

/// How to finish an md5 over listed Parts: start from `state` (the chain's state after the
/// first `reused` listed Parts) and hash `remaining` in order.
#[derive(Debug, Clone)]
#[must_use]
pub struct Md5Resume {
    /// The hash state to continue from.
    pub state: Md5Hasher,
    /// How many listed Parts the state already covers.
    pub reused: usize,
    /// The listed Parts still to hash, in order.
    pub remaining: Vec<crate::types::PartId>,
}

impl Md5Resume {
    /// How to compute the md5 of `listed` from a chain kept outside this process (a
    /// database's, which several instances extend): `chained(index, part)` is the state after
    /// `part` when the chain hashed it as its `index`-th Part, else `None`. The longest prefix
    /// of `listed` the chain hashed in that order is reused, as [`Md5Chain::resume_for`] does.
    pub fn from_saved(
        listed: &[crate::types::PartId],
        mut chained: impl FnMut(usize, &crate::types::PartId) -> Option<Md5Hasher>,
    ) -> Self {
        let mut state = Md5Hasher::new();
        let mut reused = 0;
        for (index, part) in listed.iter().enumerate() {
            let Some(after) = chained(index, part) else {
                break;
            };
            state = after;
            reused += 1;
        }
        Self {
            state,
            reused,
            remaining: listed[reused..].to_vec(),
        }
    }
}

/// Which Part extends a chain of positioned Parts next: the first one recorded at
/// `next_position` (a retried Part may have been recorded twice at one position; the
/// complete lists one of them, and a mismatch only costs reading the rest again).
/// `recorded` are the candidates as `(position, order recorded, part)`.
pub fn next_in_file_order<P: Clone>(
    next_position: u32,
    recorded: impl IntoIterator<Item = (u32, u64, P)>,
) -> Option<P> {
    recorded
        .into_iter()
        .filter(|(position, _, _)| *position == next_position)
        .min_by_key(|(_, order, _)| *order)
        .map(|(_, _, part)| part)
}

impl Md5Chain {
    /// A chain with no Parts.
    pub fn new() -> Self {
        Self::default()
    }

    /// A Part's request started (its bytes are on their way).
    pub fn slot_started(&mut self, part: crate::types::PartId) {
        self.slot_started_at(part, None);
    }

    /// A Part's request started, naming its 0-based `position` in the file (or not): a
    /// positioned Part is hashed once every position before it was, whatever order the
    /// requests arrived in.
    pub fn slot_started_at(&mut self, part: crate::types::PartId, position: Option<u32>) {
        // Never before the slot being hashed: `hashed` finds it at `consumed`.
        let first_free = self.consumed + usize::from(self.hashing);
        let at = position.map_or(self.slots.len(), |position| {
            self.slots[first_free..]
                .iter()
                .position(|(_, other, _)| other.is_some_and(|other| other > position))
                .map_or(self.slots.len(), |offset| first_free + offset)
        });
        self.slots.insert(at, (part, position, Slot::Pending));
    }

    /// A Part's bytes are durable and recorded.
    pub fn slot_committed(&mut self, part: &crate::types::PartId) {
        self.set(part, Slot::Committed);
    }

    /// A Part's request ended without recording it: the chain skips it.
    pub fn slot_failed(&mut self, part: &crate::types::PartId) {
        self.set(part, Slot::Dead);
    }

    fn set(&mut self, part: &crate::types::PartId, slot: Slot) {
        if let Some((_, _, state)) = self.slots.iter_mut().find(|(id, _, _)| id == part) {
            *state = slot;
        }
    }

    /// Where the chain stands: how many leading slots it may skip (failed Parts, and
    /// positions already hashed by another request for the same position), and whether the
    /// slot after those is committed and in its place (its position is the next one).
    fn next_slot(&self) -> (usize, bool) {
        let mut at = self.consumed;
        while let Some((_, position, slot)) = self.slots.get(at) {
            let behind = position.is_some_and(|position| position < self.next_position);
            if *slot == Slot::Dead || behind {
                at += 1;
                continue;
            }
            let in_place = position.is_none_or(|position| position == self.next_position);
            return (at, *slot == Slot::Committed && in_place);
        }
        (at, false)
    }

    /// The next Part to hash, with the state to hash it from, if the chain can advance now;
    /// the caller reads its bytes, feeds them, and returns the state with
    /// [`Md5Chain::hashed`]. At most one Part is out at a time.
    pub fn next_to_hash(&mut self) -> Option<(crate::types::PartId, Md5Hasher)> {
        if self.hashing {
            return None;
        }
        let (at, ready) = self.next_slot();
        self.consumed = at;
        if !ready {
            return None;
        }
        self.hashing = true;
        let state = self
            .states
            .last()
            .map(|(_, state)| state.clone())
            .unwrap_or_default();
        Some((self.slots[at].0.clone(), state))
    }

    /// The state after hashing the Part [`Md5Chain::next_to_hash`] handed out.
    pub fn hashed(&mut self, part: crate::types::PartId, state: Md5Hasher) {
        self.hashing = false;
        if let Some(position) = self.slots[self.consumed].1 {
            self.next_position = position + 1;
        }
        self.consumed += 1;
        self.states.push((part, state));
    }

    /// Gives back a Part handed out by [`Md5Chain::next_to_hash`] that could not be hashed:
    /// the chain stops there (complete reads the rest).
    pub fn abandon(&mut self) {
        self.hashing = false;
        self.slots.truncate(self.consumed);
    }

    /// Whether the chain has work under way or ready: a Part being hashed, or a committed
    /// Part next in line. A complete waits for it rather than reading those bytes again.
    pub fn is_busy(&self) -> bool {
        self.hashing || self.next_slot().1
    }

    /// How to compute the md5 of `listed` (the complete request's order) reusing the chain.
    pub fn resume_for(&self, listed: &[crate::types::PartId]) -> Md5Resume {
        let reused = listed
            .iter()
            .zip(&self.states)
            .take_while(|(listed, (hashed, _))| listed == &hashed)
            .count();
        Md5Resume {
            state: reused
                .checked_sub(1)
                .map(|last| self.states[last].1.clone())
                .unwrap_or_default(),
            reused,
            remaining: listed[reused..].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PartId;
    use proptest::prelude::*;

    fn part(index: usize) -> PartId {
        PartId::new(format!("part_{index}"))
    }

    fn bytes_of(index: usize) -> Vec<u8> {
        (0..(10 + index * 7))
            .map(|byte| (byte * 31 + index) as u8)
            .collect()
    }

    /// Drives the chain as a service would, then finishes the md5 of `listed`.
    fn digest_via_chain(chain: &mut Md5Chain, listed: &[PartId]) -> (String, usize) {
        while let Some((next, mut state)) = chain.next_to_hash() {
            let index: usize = next.as_str()["part_".len()..].parse().unwrap();
            state.update(&bytes_of(index));
            chain.hashed(next, state);
        }
        let resume = chain.resume_for(listed);
        let mut state = resume.state;
        for id in &resume.remaining {
            let index: usize = id.as_str()["part_".len()..].parse().unwrap();
            state.update(&bytes_of(index));
        }
        (state.finish_hex(), resume.reused)
    }

    fn expected(listed: &[PartId]) -> String {
        let mut hasher = Md5Hasher::new();
        for id in listed {
            let index: usize = id.as_str()["part_".len()..].parse().unwrap();
            hasher.update(&bytes_of(index));
        }
        hasher.finish_hex()
    }

    #[test]
    fn parts_in_start_order_need_no_second_read() {
        let mut chain = Md5Chain::new();
        let listed: Vec<PartId> = (0..4).map(part).collect();
        for id in &listed {
            chain.slot_started(id.clone());
        }
        // Committed out of order: the chain waits for part 0, then runs through.
        for index in [2, 0, 3, 1] {
            chain.slot_committed(&part(index));
        }
        let (digest, reused) = digest_via_chain(&mut chain, &listed);
        assert_eq!((digest, reused), (expected(&listed), 4));
    }

    #[test]
    fn positioned_parts_are_hashed_in_file_order_whatever_order_they_started_in() {
        let mut chain = Md5Chain::new();
        let listed: Vec<PartId> = (0..5).map(part).collect();
        // Requests sent in parallel arrive in any order; a retry of position 1 replaces
        // the failed one.
        for index in [2, 0, 3, 1, 4] {
            chain.slot_started_at(part(index), Some(index as u32));
        }
        chain.slot_failed(&part(1));
        for index in [3, 2, 0] {
            chain.slot_committed(&part(index));
        }
        assert_eq!(chain.next_to_hash().map(|(next, _)| next), Some(part(0)));
        chain.hashed(part(0), Md5Hasher::new());
        assert!(!chain.is_busy(), "position 1 has not arrived again yet");
        assert!(chain.next_to_hash().is_none());
        let mut chain = Md5Chain::new();
        for index in [2, 0, 3, 1, 4] {
            chain.slot_started_at(part(index), Some(index as u32));
        }
        chain.slot_failed(&part(1));
        chain.slot_started_at(PartId::new("part_1_retry"), Some(1));
        for index in [3, 2, 0, 4] {
            chain.slot_committed(&part(index));
        }
        chain.slot_committed(&PartId::new("part_1_retry"));
        let listed: Vec<PartId> = listed
            .into_iter()
            .map(|id| {
                if id == part(1) {
                    PartId::new("part_1_retry")
                } else {
                    id
                }
            })
            .collect();
        let mut hashed = Vec::new();
        while let Some((next, state)) = chain.next_to_hash() {
            hashed.push(next.clone());
            chain.hashed(next, state);
        }
        assert_eq!(hashed, listed, "every Part, in file order");
        assert_eq!(chain.resume_for(&listed).reused, 5);
    }

    #[test]
    fn a_failed_slot_is_skipped_and_a_different_order_reuses_the_common_prefix() {
        let mut chain = Md5Chain::new();
        for index in 0..4 {
            chain.slot_started(part(index));
        }
        chain.slot_failed(&part(1));
        for index in [0, 2, 3] {
            chain.slot_committed(&part(index));
        }
        let listed = vec![part(0), part(3), part(2)];
        let (digest, reused) = digest_via_chain(&mut chain, &listed);
        assert_eq!((digest, reused), (expected(&listed), 1));
    }

    #[test]
    fn a_pending_slot_stops_the_chain_and_abandon_cuts_it() {
        let mut chain = Md5Chain::new();
        chain.slot_started(part(0));
        chain.slot_started(part(1));
        chain.slot_committed(&part(1));
        assert!(!chain.is_busy(), "part 1 waits behind part 0");
        assert!(chain.next_to_hash().is_none(), "part 0 is still on its way");
        chain.slot_committed(&part(0));
        let (next, _) = chain.next_to_hash().unwrap();
        assert_eq!(next, part(0));
        assert!(chain.is_busy());
        assert!(chain.next_to_hash().is_none(), "one at a time");
        chain.abandon();
        assert!(chain.next_to_hash().is_none());
        let listed = vec![part(0), part(1)];
        assert_eq!(
            digest_via_chain(&mut chain, &listed),
            (expected(&listed), 0)
        );
    }

    #[test]
    fn a_retry_of_a_failed_position_lets_the_chain_run_on_through_the_parts_after_it() {
        let mut chain = Md5Chain::new();
        for index in 0..4 {
            chain.slot_started_at(part(index), Some(index as u32));
        }
        chain.slot_failed(&part(1));
        for index in [0, 2, 3] {
            chain.slot_committed(&part(index));
        }
        let retry = PartId::new("part_1_retry");
        let mut hashed = Vec::new();
        while let Some((next, state)) = chain.next_to_hash() {
            hashed.push(next.clone());
            chain.hashed(next, state);
        }
        assert_eq!(hashed, [part(0)], "positions 2 and 3 wait for position 1");
        chain.slot_started_at(retry.clone(), Some(1));
        chain.slot_committed(&retry);
        while let Some((next, state)) = chain.next_to_hash() {
            hashed.push(next.clone());
            chain.hashed(next, state);
        }
        assert_eq!(hashed, [part(0), retry, part(2), part(3)]);
    }

    #[test]
    fn a_second_request_for_a_position_hashed_or_being_hashed_goes_after_it() {
        let mut chain = Md5Chain::new();
        for index in 0..2 {
            chain.slot_started_at(part(index), Some(index as u32));
            chain.slot_committed(&part(index));
        }
        let (first, state) = chain.next_to_hash().expect("position 0 is committed");
        chain.hashed(first, state);
        let (second, state) = chain.next_to_hash().expect("position 1 is committed");
        assert_eq!(second, part(1));
        // Position 0 again, while position 1 is out: it must not slip in front of the Part
        // being hashed, whose state `hashed` files under its slot.
        chain.slot_started_at(PartId::new("part_0_again"), Some(0));
        chain.hashed(second, state);
        chain.slot_committed(&PartId::new("part_0_again"));
        assert!(
            chain.next_to_hash().is_none(),
            "positions 0 and 1 are hashed"
        );
        assert_eq!(chain.resume_for(&[part(0), part(1)]).reused, 2);

        // A second request for a position not hashed yet waits behind the first.
        let mut chain = Md5Chain::new();
        chain.slot_started_at(part(0), Some(0));
        chain.slot_committed(&part(0));
        chain.slot_started_at(PartId::new("part_0_again"), Some(0));
        assert_eq!(chain.next_to_hash().map(|(next, _)| next), Some(part(0)));
    }

    #[test]
    fn a_committed_part_next_in_line_keeps_the_chain_busy_until_abandoned() {
        let mut chain = Md5Chain::new();
        chain.slot_started(part(0));
        assert!(!chain.is_busy(), "part 0 is on its way");
        chain.slot_committed(&part(0));
        assert!(chain.is_busy(), "part 0 is ready to hash");
        let _ = chain.next_to_hash().expect("part 0 is ready");
        chain.abandon();
        assert!(
            !chain.is_busy(),
            "a complete must not wait for an abandoned Part"
        );
        // The chain runs on from where it stopped.
        chain.slot_started(part(1));
        chain.slot_committed(&part(1));
        assert_eq!(chain.next_to_hash().map(|(next, _)| next), Some(part(1)));
    }

    proptest! {
        /// Whatever the start, commit and fail order and whatever the listed order, the md5
        /// is the md5 of the listed Parts' bytes in the listed order.
        #[test]
        fn the_digest_is_always_that_of_the_listed_order(
            count in 1_usize..8,
            positioned in any::<bool>(),
            commits in prop::collection::vec(0_usize..8, 0..16),
            failed in prop::collection::vec(0_usize..8, 0..3),
            listed in prop::collection::vec(0_usize..8, 1..8),
        ) {
            let mut chain = Md5Chain::new();
            for index in (0..count).rev() {
                // Positioned: started last to first, each naming its place.
                let position = positioned.then(|| (count - 1 - index) as u32);
                chain.slot_started_at(part(index), position);
            }
            for index in failed {
                chain.slot_failed(&part(index));
            }
            for (step, index) in commits.into_iter().enumerate() {
                chain.slot_committed(&part(index));
                if step % 3 == 0
                    && let Some((next, mut state)) = chain.next_to_hash()
                {
                    let index: usize = next.as_str()["part_".len()..].parse().unwrap();
                    state.update(&bytes_of(index));
                    chain.hashed(next, state);
                }
            }
            let listed: Vec<PartId> = listed.into_iter().map(part).collect();
            let (digest, reused) = digest_via_chain(&mut chain, &listed);
            prop_assert_eq!(digest, expected(&listed));
            prop_assert!(reused <= listed.len());
        }
    }

    #[test]
    fn known_digests_in_hex_both_ways() {
        let mut hasher = Md5Hasher::new();
        hasher.update(b"hello ");
        hasher.update(b"world");
        let hex = hasher.finish_hex();
        assert_eq!(hex, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            parse_hex(&hex.to_uppercase()).map(|d| to_hex(&d)),
            Some(hex)
        );
        assert_eq!(
            Md5Hasher::new().finish_hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        for bad in [
            "",
            "5eb63bbbe01eeed093cb22bb8f5acdc",
            "5eb63bbbe01eeed093cb22bb8f5acdcz",
            "é".repeat(16).as_str(),
        ] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn a_saved_state_continues_where_it_stopped(
            before in prop::collection::vec(any::<u8>(), 0..300),
            after in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut whole = Md5Hasher::new();
            whole.update(&before);
            let saved = whole.save();
            whole.update(&after);
            let mut restored = Md5Hasher::restore(&saved).expect("a saved state");
            restored.update(&after);
            prop_assert_eq!(restored.finish(), whole.finish());
        }
    }

    #[test]
    fn bytes_that_are_not_a_saved_state_restore_nothing() {
        let saved = Md5Hasher::new().save();
        assert!(Md5Hasher::restore(&saved[..saved.len() - 1]).is_none());
        assert!(Md5Hasher::restore(&[]).is_none());
        let mut overlong = saved.clone();
        // The partial block's length byte says more than a block holds.
        *overlong.last_mut().unwrap() = 200;
        assert!(Md5Hasher::restore(&overlong).is_none());
    }

    #[test]
    fn a_saved_chain_is_reused_for_the_prefix_it_hashed_in_listed_order() {
        let chained: Vec<(PartId, Md5Hasher)> = {
            let mut state = Md5Hasher::new();
            (1..=3)
                .map(|index| {
                    state.update(&bytes_of(index));
                    (part(index), state.clone())
                })
                .collect()
        };
        let lookup = |index: usize, id: &PartId| {
            chained
                .get(index)
                .filter(|(chained, _)| chained == id)
                .map(|(_, state)| Md5Hasher::restore(&state.save()).unwrap())
        };
        let listed = [part(1), part(2), part(4)];
        let resume = Md5Resume::from_saved(&listed, lookup);
        assert_eq!(resume.reused, 2);
        assert_eq!(resume.remaining, vec![part(4)]);
        let mut state = resume.state;
        state.update(&bytes_of(4));
        let mut direct = Md5Hasher::new();
        for index in [1, 2, 4] {
            direct.update(&bytes_of(index));
        }
        assert_eq!(state.finish(), direct.finish());
        // Hashed, but not as the first Part: nothing is reused.
        let resume = Md5Resume::from_saved(&[part(2), part(1)], lookup);
        assert_eq!((resume.reused, resume.remaining.len()), (0, 2));
    }

    #[test]
    fn the_first_part_recorded_at_the_next_position_extends_the_chain() {
        let recorded = [
            (1, 7, "late"),
            (0, 9, "retry"),
            (0, 3, "first"),
            (2, 1, "ahead"),
        ];
        assert_eq!(next_in_file_order(0, recorded), Some("first"));
        assert_eq!(next_in_file_order(1, recorded), Some("late"));
        assert_eq!(next_in_file_order(3, recorded), None);
    }
}
