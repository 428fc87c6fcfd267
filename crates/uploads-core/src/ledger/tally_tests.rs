//! A ledger loaded with a tally ([`Ledger::load_tallied`]: the record without its Parts,
//! their count and total) decides adding a Part exactly as one holding every Part, and
//! refuses to decide what needs the Parts themselves.

use proptest::prelude::*;

use super::scenario::{START, Scenario, owner_a, owner_b};
use super::*;
use crate::limits::Limits;
use crate::types::PartId;

/// What happens to the Upload before the Part under test arrives.
#[derive(Debug, Clone, Copy)]
enum Then {
    StayPending,
    Cancel,
    Complete,
    Expire,
}

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![
        4 => Just(Then::StayPending),
        1 => Just(Then::Cancel),
        1 => Just(Then::Complete),
        1 => Just(Then::Expire),
    ]
}

/// The Upload's record as a store keeping a tally loads it: without its Parts, or with the
/// one Part asked about.
fn tallied(ledger: &Ledger, record: &UploadRecord, asked: Option<&PartId>) -> Ledger {
    let tally = PartTally {
        count: record.parts.len() as u64,
        bytes: record.parts_total(),
    };
    let mut partial = record.clone();
    partial
        .parts
        .retain(|part| asked.is_some_and(|asked| part.id == *asked));
    Ledger::load_tallied(ledger.limits().clone(), partial, tally)
}

/// A rejection as a client sees it.
fn seen(rejection: &Rejection) -> (u16, Option<String>, String) {
    (
        rejection.status.as_u16(),
        rejection.param().map(str::to_owned),
        rejection.body.error.message.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn adding_a_part_is_decided_alike_with_a_tally(
        sizes in prop::collection::vec(0u64..40, 0..6),
        next in 0u64..60,
        max_parts in 1u64..6,
        then in then(),
        stranger in any::<bool>(),
        reuse_slot in any::<bool>(),
    ) {
        let limits = Limits::default()
            .with_max_parts_per_upload(max_parts)
            .with_max_upload_bytes(100)
            .with_max_part_bytes(50);
        let mut scenario = Scenario::with_limits(limits);
        // Declares what the accepted Parts add up to, so that a complete can succeed.
        let (mut count, mut declared) = (0, 0);
        for &size in &sizes {
            if count < max_parts && declared + size <= 100 {
                count += 1;
                declared += size;
            }
        }
        let upload = scenario.upload(&owner_a(), declared.max(1));
        let mut added = Vec::new();
        for size in sizes {
            // A refused Part (over a limit) is simply not added.
            if let Ok(part) = scenario.add_part(&owner_a(), &upload, &vec![b'x'; size as usize]) {
                added.push((part.id, size));
            }
        }
        match then {
            Then::StayPending => {}
            Then::Cancel => {
                scenario.cancel(&owner_a(), &upload).unwrap();
            }
            Then::Complete => {
                let listed: Vec<&str> = added.iter().map(|(id, _)| id.as_str()).collect();
                // Refused when nothing was added (nothing adds up to the declared byte).
                let _ = scenario.complete(&owner_a(), &upload, &serde_json::json!({"part_ids": listed}));
            }
            Then::Expire => scenario.now += 3 * 3600,
        }
        let now = scenario.now;
        let owner = if stranger { owner_b() } else { owner_a() };
        let record = scenario.record(&upload).clone();
        let full = scenario.ledger.clone();

        let mut full_ids = scenario.ids.clone();
        let mut tally_ids = scenario.ids.clone();
        let by_full = full.check_add_part(&owner, &upload, now, &mut full_ids);
        let by_tally = tallied(&full, &record, None).check_add_part(&owner, &upload, now, &mut tally_ids);
        match (&by_full, &by_tally) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.part_id(), b.part_id()),
            (Err(a), Err(b)) => prop_assert_eq!(seen(a), seen(b)),
            _ => prop_assert!(false, "check_add_part: {by_full:?} vs {by_tally:?}"),
        }
        let Ok(mut slot) = by_full else { return Ok(()) };
        if reuse_slot && let Some((used, _)) = added.first() {
            // A slot naming a Part already added (a server bug): the tallied load carries
            // that Part, as the store loads the slot's own row.
            slot = PartSlot { upload_id: upload.clone(), part_id: used.clone() };
        }
        let by_full = full.add_part(&owner, &slot, next, now);
        let with_slot_part = tallied(&full, &record, Some(slot.part_id()));
        let by_tally = with_slot_part.add_part(&owner, &slot, next, now);
        match (by_full, by_tally) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.response, b.response);
                let (a, b) = (a.change.unwrap(), b.change.unwrap());
                prop_assert_eq!(a.steps(), b.steps());
            }
            (Err(a), Err(b)) => prop_assert_eq!(seen(&a), seen(&b)),
            (a, b) => prop_assert!(false, "add_part: {a:?} vs {b:?}"),
        }
    }
}

#[test]
fn a_tallied_ledger_refuses_what_needs_the_parts() {
    let mut scenario = Scenario::new();
    let upload = scenario.upload(&owner_a(), 2);
    scenario.part(&owner_a(), &upload, b"a");
    scenario.part(&owner_a(), &upload, b"b");
    let record = scenario.record(&upload).clone();
    let ledger = tallied(&scenario.ledger, &record, None);
    let cancel = ledger
        .cancel_upload(&owner_a(), &upload, START)
        .unwrap_err();
    assert_eq!(cancel.status.as_u16(), 500, "{cancel}");
    let body = format!(r#"{{"part_ids":["{}"]}}"#, record.parts[0].id);
    let complete = ledger
        .plan_complete(&owner_a(), &upload, body.as_bytes(), START)
        .unwrap_err();
    assert_eq!(complete.status.as_u16(), 500, "{complete}");
    // Expired, it would be swept by a whole ledger; a tallied one leaves it alone.
    let later = START + 3 * 3600;
    assert!(scenario.ledger.sweep(later).is_some());
    assert!(ledger.sweep(later).is_none());
}

#[test]
fn an_applied_part_counts_in_the_tally() {
    let limits = Limits::default().with_max_parts_per_upload(2);
    let mut scenario = Scenario::with_limits(limits);
    let upload = scenario.upload(&owner_a(), 2);
    scenario.part(&owner_a(), &upload, b"a");
    let record = scenario.record(&upload).clone();
    let mut ledger = tallied(&scenario.ledger, &record, None);
    let slot = ledger
        .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
        .unwrap();
    let planned = ledger.add_part(&owner_a(), &slot, 1, START).unwrap();
    ledger.apply(planned.change.unwrap()).unwrap();
    let full = ledger
        .check_add_part(&owner_a(), &upload, START, &mut scenario.ids)
        .unwrap_err();
    assert_eq!(full.param(), Some("data"), "{full}");
}
