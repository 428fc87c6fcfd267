//! The PostgreSQL records against a real PostgreSQL (the harness's private cluster): two
//! `PgRecords` on one database stand for two instances.

use crate::test_services as services;
use std::sync::Arc;

use md5::{Digest, Md5};
use uploads_core::ledger::{CompletePlan, IdSource, Owner, RandomIds};
use uploads_core::types::{ListFilesQuery, ListOrder, PartId, Purpose, Upload, UploadStatus};

use super::*;
use crate::records::{MutationError, Scope};

const NOW: u64 = 1_700_000_000;

fn ids() -> impl IdSource {
    RandomIds::new(|buffer: &mut [u8]| getrandom::fill(buffer).expect("entropy"))
}

fn owner() -> Owner {
    Owner::new("proj_pg")
}

async fn instances(n: usize) -> (services::Namespace, Vec<Arc<PgRecords>>) {
    let namespace = services::Services::get().fresh();
    let mut started = Vec::new();
    for _ in 0..n {
        started.push(Arc::new(
            PgRecords::connect(&namespace.database_url, Limits::default())
                .await
                .unwrap(),
        ));
    }
    (namespace, started)
}

async fn create(records: &PgRecords, bytes: u64) -> Upload {
    let body = format!(
        r#"{{"filename":"a.txt","purpose":"user_data","bytes":{bytes},"mime_type":"text/plain"}}"#
    );
    records
        .mutate(&Scope::Nothing, NOW, |ledger, _| {
            ledger.create_upload(&owner(), body.as_bytes(), NOW, &mut ids())
        })
        .await
        .unwrap()
        .response
}

/// Adds a Part as the service does: check, intent, (bytes), record.
async fn add_part(records: &PgRecords, upload: &UploadId, bytes: u64) -> PartId {
    add_part_at(records, upload, bytes, None).await
}

/// [`add_part`] for a request naming the Part's position in the file.
async fn add_part_at(
    records: &PgRecords,
    upload: &UploadId,
    bytes: u64,
    position: Option<u32>,
) -> PartId {
    let slot = records
        .read(&new_part(upload, None), NOW, |ledger, _| {
            ledger.check_add_part(&owner(), upload, NOW, &mut ids())
        })
        .await
        .unwrap();
    records
        .intend(&part_key(upload, slot.part_id()), NOW)
        .await
        .unwrap();
    records
        .mutate(
            &new_part_at(upload, Some(slot.part_id()), position),
            NOW,
            |ledger, _| ledger.add_part(&owner(), &slot, bytes, NOW),
        )
        .await
        .unwrap()
        .response
        .id
}

fn new_part(upload: &UploadId, part: Option<&PartId>) -> Scope {
    new_part_at(upload, part, None)
}

fn new_part_at(upload: &UploadId, part: Option<&PartId>, position: Option<u32>) -> Scope {
    Scope::NewPart {
        upload: upload.clone(),
        part: part.cloned(),
        position,
    }
}

async fn complete(
    records: &PgRecords,
    upload: &UploadId,
    body: &str,
    md5: Option<[u8; 16]>,
) -> Result<Upload, MutationError> {
    let plan = records
        .read(&Scope::Upload(upload.clone()), NOW, |ledger, _| {
            ledger.plan_complete(&owner(), upload, body.as_bytes(), NOW)
        })
        .await
        .map_err(MutationError::Refused)?;
    let verification = match plan {
        CompletePlan::Replay(upload) => return Ok(upload),
        CompletePlan::Verify(verification) => verification,
    };
    records
        .mutate(&Scope::Upload(upload.clone()), NOW + 1, |ledger, _| {
            ledger.finish_complete(&owner(), &verification, md5, NOW + 1, &mut ids())
        })
        .await
        .map(|committed| committed.response)
}

fn hex_md5(data: &[u8]) -> String {
    let mut hasher = uploads_core::digest::Md5Hasher::new();
    hasher.update(data);
    hasher.finish_hex()
}

fn refused(result: Result<Upload, MutationError>) -> Rejection {
    match result {
        Err(MutationError::Refused(rejection)) => rejection,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn instances_starting_at_once_apply_the_migrations_once() {
    let namespace = services::Services::get().fresh();
    let starts = (0..4).map(|_| {
        let url = namespace.database_url.clone();
        tokio::spawn(async move { PgRecords::connect(&url, Limits::default()).await })
    });
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let applied = services::Services::get().psql_on(
        &namespace.database,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    let every: Vec<String> = (1..=migrations::latest_version())
        .map(|version| version.to_string())
        .collect();
    assert_eq!(applied, every.join(","));
}

#[tokio::test]
async fn adding_a_part_loads_the_upload_row_and_the_tally_not_every_part() {
    let (namespace, instances) = instances(2).await;
    let upload = create(&instances[0], 10).await.id;
    let mut added = Vec::new();
    for (index, bytes) in [3, 1, 4, 1, 5, 9, 2, 6].into_iter().enumerate() {
        added.push(add_part(&instances[index % 2], &upload, bytes).await);
    }
    // Parts inserted by any writer are counted by the database itself.
    services::Services::get().psql_on(
        &namespace.database,
        &format!(
            "INSERT INTO upload_parts (upload_id, part_id, bytes, created_at) \
             VALUES ('{upload}', 'part_by_hand', 7, {NOW})"
        ),
    );
    let mut client = instances[0].pool.get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let asked = new_part(&upload, Some(&added[2]));
    let loaded = load(&*transaction, &asked, NOW, true).await.unwrap();
    assert_eq!(
        loaded.tally,
        Some(PartTally {
            count: 9,
            bytes: 3 + 1 + 4 + 1 + 5 + 9 + 2 + 6 + 7
        })
    );
    let [(record, _)] = loaded.uploads.as_slice() else {
        panic!("one Upload loaded: {}", loaded.uploads.len());
    };
    assert_eq!(record.part_ids(), vec![added[2].clone()]);
    let slotless = load(&*transaction, &new_part(&upload, None), NOW, false)
        .await
        .unwrap();
    assert!(slotless.uploads[0].0.parts.is_empty());
    // The whole Upload, as a complete loads it, has every Part, in order.
    let whole = load(&*transaction, &Scope::Upload(upload.clone()), NOW, false)
        .await
        .unwrap();
    assert_eq!(whole.uploads[0].0.parts.len(), 9);
    assert_eq!(whole.uploads[0].0.part_ids()[..8], added[..]);
}

/// The md5 chain in the database: Parts are claimed in file order whatever order they were
/// recorded in (a run of consecutive positions, up to the first missing), one instance at a
/// time; a lapsed lease is taken over and its holder's late save refused; a complete reuses
/// the prefix of its listed order that the chain hashed.
#[tokio::test]
async fn the_md5_chain_advances_in_file_order_under_one_lease() {
    let (_namespace, instances) = instances(2).await;
    let (a, b) = (&instances[0], &instances[1]);
    let upload = create(a, 8).await.id;
    let second = add_part_at(b, &upload, 2, Some(1)).await;
    let fourth = add_part_at(b, &upload, 2, Some(3)).await;
    let claimed = |claim: &ChainClaim| -> Vec<PartId> {
        claim.parts.iter().map(|(part, _)| part.clone()).collect()
    };
    assert!(
        a.claim_next_to_hash(&upload, Now::At(NOW))
            .await
            .unwrap()
            .is_none(),
        "position 0 is missing"
    );
    let first = add_part_at(a, &upload, 2, Some(0)).await;
    let retry_of_first = add_part_at(b, &upload, 2, Some(0)).await;
    let claim = a
        .claim_next_to_hash(&upload, Now::At(NOW))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claimed(&claim),
        vec![first.clone(), second.clone()],
        "the first Part recorded at each position, up to the missing third"
    );
    assert_eq!(claim.parts[0].1, 2, "each with its length");
    assert!(
        b.claim_next_to_hash(&upload, Now::At(NOW))
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    let mut state = claim.state.clone();
    state.update(b"p0");
    let after_first = state.clone();
    // Only the first was read (the second failed): that much is saved, the chain released.
    assert!(a.save_hashed(&claim, &[after_first]).await.unwrap());

    // a claims the next run and stalls past its lease: b takes over, a's save is refused.
    let stalled = a
        .claim_next_to_hash(&upload, Now::At(NOW))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed(&stalled), vec![second.clone()]);
    let later = Now::At(NOW + 61);
    let taken = b.claim_next_to_hash(&upload, later).await.unwrap().unwrap();
    assert_eq!(claimed(&taken), vec![second.clone()]);
    let mut state = taken.state.clone();
    state.update(b"p1");
    assert!(!a.save_hashed(&stalled, &[state.clone()]).await.unwrap());
    assert!(b.save_hashed(&taken, &[state]).await.unwrap());
    assert!(
        b.claim_next_to_hash(&upload, later)
            .await
            .unwrap()
            .is_none(),
        "nothing at 2"
    );

    let third = add_part_at(a, &upload, 2, Some(2)).await;
    let resume = a
        .resume_chain(
            &upload,
            &[first.clone(), second.clone(), third.clone(), fourth.clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        (resume.reused, resume.remaining.clone()),
        (2, vec![third.clone(), fourth.clone()])
    );
    let mut direct = uploads_core::digest::Md5Hasher::new();
    direct.update(b"p0p1");
    assert_eq!(resume.state.finish(), direct.finish());
    let run = a.claim_next_to_hash(&upload, later).await.unwrap().unwrap();
    assert_eq!(claimed(&run), vec![third.clone(), fourth.clone()]);
    // The retry listed instead of the chained Part: nothing is reused.
    let resume = a
        .resume_chain(&upload, &[retry_of_first, second, third, fourth])
        .await
        .unwrap();
    assert_eq!(resume.reused, 0);
}

#[tokio::test]
async fn the_part_count_limit_holds_across_instances_through_the_tally() {
    let namespace = services::Services::get().fresh();
    let limits = Limits::default().with_max_parts_per_upload(3);
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            PgRecords::connect(&namespace.database_url, limits.clone())
                .await
                .unwrap(),
        );
    }
    let upload = create(&instances[0], 10).await.id;
    for index in 0..3 {
        add_part(&instances[index % 2], &upload, 1).await;
    }
    let refused = instances[1]
        .read(&new_part(&upload, None), NOW, |ledger, _| {
            ledger.check_add_part(&owner(), &upload, NOW, &mut ids())
        })
        .await
        .unwrap_err();
    assert_eq!(refused.param(), Some("data"), "{refused}");
    assert!(
        refused.body.error.message.contains("already has 3 Parts"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_database_error_is_logged_with_the_databases_own_message() {
    let (_namespace, instances) = instances(1).await;
    let client = instances[0].pool.get().await.unwrap();
    let error = client.query("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "db error",
        "what tokio-postgres says alone"
    );
    let logged = with_sources(&LoadError::from(error));
    assert!(logged.contains("division by zero"), "{logged}");
}

#[tokio::test]
async fn ping_answers_while_the_database_does() {
    let (_namespace, instances) = instances(1).await;
    assert_eq!(instances[0].health().await, DatabaseHealth::Ok);
}

#[tokio::test]
async fn an_unreachable_database_is_named_at_startup() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere?connect_timeout=2");
    let error = PgRecords::connect(&url, Limits::default())
        .await
        .err()
        .expect("nothing listens there");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach the database")
            && message.contains(&format!("127.0.0.1:{port}/nowhere")),
        "{message}"
    );
}

#[tokio::test]
async fn parts_sent_to_two_instances_complete_on_either_and_replay_on_the_other() {
    let (namespace, instances) = instances(2).await;
    let (a, b) = (&instances[0], &instances[1]);
    let upload = create(a, 5).await;
    let first = add_part(a, &upload.id, 2).await;
    let second = add_part(b, &upload.id, 3).await;
    assert_eq!(
        services::Services::get().psql_on(&namespace.database, "SELECT count(*) FROM upload_parts"),
        "2",
        "a row per Part"
    );
    let md5: [u8; 16] = Md5::digest(b"hello").into();
    let body = format!(
        r#"{{"part_ids":["{first}","{second}"],"md5":"{}"}}"#,
        hex_md5(b"hello")
    );
    let done = complete(b, &upload.id, &body, Some(md5)).await.unwrap();
    assert_eq!(done.status, UploadStatus::Completed);
    let file = done.file.clone().unwrap();
    let replay = complete(a, &upload.id, &body, None).await.unwrap();
    assert_eq!(replay.file.map(|file| file.id), Some(file.id.clone()));
    let other_list = format!(r#"{{"part_ids":["{second}","{first}"]}}"#);
    let rejection = refused(complete(a, &upload.id, &other_list, None).await);
    assert_eq!(
        (rejection.status.as_u16(), rejection.param()),
        (400, Some("part_ids"))
    );
    let manifest = a
        .read(&Scope::File(file.id.clone()), NOW + 2, |ledger, _| {
            ledger.file_manifest(&owner(), &file.id, NOW + 2).cloned()
        })
        .await
        .unwrap();
    assert_eq!(manifest.part_ids, vec![first, second]);
    let nobody = Owner::new("proj_other");
    let hidden = b
        .read(&Scope::File(file.id.clone()), NOW + 2, |ledger, _| {
            ledger.retrieve_file(&nobody, &file.id, NOW + 2)
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.status.as_u16(), 404);
}

#[tokio::test]
async fn racing_completes_and_cancels_on_two_instances_have_one_winner() {
    let (_namespace, instances) = instances(2).await;
    for round in 0..6 {
        let upload = create(&instances[0], 1).await;
        let part = add_part(&instances[1], &upload.id, 1).await;
        let body = format!(r#"{{"part_ids":["{part}"]}}"#);
        let cancel_instead = round % 2 == 1;
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let records = Arc::clone(&instances[i]);
                let (upload, body) = (upload.id.clone(), body.clone());
                tokio::spawn(async move {
                    if i == 1 && cancel_instead {
                        records
                            .mutate(&Scope::Upload(upload.clone()), NOW, |ledger, _| {
                                ledger.cancel_upload(&owner(), &upload, NOW)
                            })
                            .await
                            .map(|committed| {
                                assert_eq!(
                                    committed.doomed_now.len(),
                                    1,
                                    "a cancel dooms its Part at once"
                                );
                                committed.response
                            })
                    } else {
                        complete(&records, &upload, &body, None).await
                    }
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap());
        }
        if cancel_instead {
            let won: Vec<_> = outcomes.iter().filter(|outcome| outcome.is_ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
            let loser = outcomes.into_iter().find(Result::is_err).unwrap();
            assert_eq!(refused(loser).status.as_u16(), 400);
        } else {
            let files: Vec<_> = outcomes
                .into_iter()
                .map(|outcome| outcome.unwrap().file.unwrap().id)
                .collect();
            assert_eq!(
                files[0], files[1],
                "round {round}: the loser replays the winner"
            );
        }
    }
}

#[tokio::test]
async fn files_list_from_the_index_page_by_page() {
    let (_namespace, instances) = instances(2).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let upload = create(&instances[i % 2], 1).await;
        let part = add_part(&instances[i % 2], &upload.id, 1).await;
        let body = format!(r#"{{"part_ids":["{part}"]}}"#);
        made.push(
            complete(&instances[(i + 1) % 2], &upload.id, &body, None)
                .await
                .unwrap()
                .file
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let query = ListFilesQuery {
            purpose: Some(Purpose::from_wire("user_data")),
            limit: Some(2),
            order: Some(ListOrder::Asc),
            after: after.clone(),
        };
        let scope = Scope::List {
            owner: owner().as_str().to_owned(),
            query: query.clone(),
        };
        let page = instances[seen.len() % 2]
            .read(&scope, NOW + 2, |ledger, _| {
                ledger.list_files(&owner(), &query, NOW + 2)
            })
            .await
            .unwrap();
        seen.extend(page.data.iter().map(|file| file.id.clone()));
        after = page.last_id.clone();
        if !page.has_more {
            break;
        }
    }
    let mut expected = made.clone();
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(seen, expected, "created at the same second: ordered by id");
    let query = ListFilesQuery {
        purpose: Some(Purpose::from_wire("batch")),
        ..ListFilesQuery::default()
    };
    let scope = Scope::List {
        owner: owner().as_str().to_owned(),
        query: query.clone(),
    };
    let none = instances[0]
        .read(&scope, NOW + 2, |ledger, _| {
            ledger.list_files(&owner(), &query, NOW + 2)
        })
        .await
        .unwrap();
    assert!(none.data.is_empty());
}

#[tokio::test]
async fn sweeps_on_two_instances_remove_each_record_once_and_doom_its_objects() {
    let (namespace, instances) = instances(2).await;
    let services = services::Services::get();
    let mut uploads = Vec::new();
    for _ in 0..8 {
        let upload = create(&instances[0], 10).await;
        add_part(&instances[1], &upload.id, 4).await;
        uploads.push(upload);
    }
    // An intent whose object was never recorded: an instance died mid-Part.
    instances[0]
        .intend("uploads/upload_dead/part_dead", NOW)
        .await
        .unwrap();
    let expired = NOW + Limits::default().upload_ttl_secs;
    let sweeps: Vec<_> = instances
        .iter()
        .map(|records| {
            let records = Arc::clone(records);
            tokio::spawn(async move { records.sweep(expired).await })
        })
        .collect();
    let mut claimed = 0;
    for sweep in sweeps {
        claimed += sweep.await.unwrap().unwrap().records;
    }
    assert_eq!(claimed, 8, "each expired Upload claimed by one instance");
    assert_eq!(
        instances[0].sweep(expired).await.unwrap().records,
        0,
        "its Parts go once"
    );
    let doomed = services.psql_on(
        &namespace.database,
        &format!("SELECT count(*) FROM doomed_objects WHERE not_before <= {expired}"),
    );
    assert_eq!(doomed, "8", "one object per Part, not the young intent");
    let forgotten = expired + Limits::default().upload_ttl_secs;
    assert_eq!(instances[1].sweep(forgotten).await.unwrap().records, 8);
    assert_eq!(
        services.psql_on(&namespace.database, "SELECT count(*) FROM uploads"),
        "0"
    );
    let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = instances[0]
        .collect_objects(forgotten + 4 * 3600, 100, None, |key| {
            let deleted = Arc::clone(&deleted);
            async move {
                deleted.lock().unwrap().push(key);
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(collected, 9, "eight Parts and the dead instance's object");
    assert!(
        deleted
            .lock()
            .unwrap()
            .contains(&"uploads/upload_dead/part_dead".to_owned())
    );
}

#[tokio::test]
async fn a_part_whose_intent_was_collected_is_not_acknowledged() {
    let (_namespace, instances) = instances(1).await;
    let records = &instances[0];
    let upload = create(records, 1).await;
    let slot = records
        .read(&Scope::Upload(upload.id.clone()), NOW, |ledger, _| {
            ledger.check_add_part(&owner(), &upload.id, NOW, &mut ids())
        })
        .await
        .unwrap();
    // No intent: as if a sweeper had collected it while the Part streamed.
    let outcome = records
        .mutate(&Scope::Upload(upload.id.clone()), NOW, |ledger, _| {
            ledger.add_part(&owner(), &slot, 1, NOW)
        })
        .await;
    match outcome {
        Err(MutationError::Failed(rejection)) => assert_eq!(rejection.status.as_u16(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    // An intent a sweeper has claimed (its object is being deleted) is not consumed either.
    let key = part_key(&upload.id, slot.part_id());
    records.intend(&key, NOW).await.unwrap();
    records
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE doomed_objects SET claimed_until = $2 WHERE key = $1",
            &[&key, &to_i64(NOW + 300)],
        )
        .await
        .unwrap();
    let outcome = records
        .mutate(&Scope::Upload(upload.id.clone()), NOW, |ledger, _| {
            ledger.add_part(&owner(), &slot, 1, NOW)
        })
        .await;
    assert!(
        matches!(outcome, Err(MutationError::Failed(_))),
        "{outcome:?}"
    );
    let parts = records
        .read(&Scope::Upload(upload.id.clone()), NOW, |ledger, _| {
            ledger.check_add_part(&owner(), &upload.id, NOW, &mut ids())
        })
        .await;
    assert!(
        parts.is_ok(),
        "the Upload is unchanged and still takes Parts"
    );
}

/// An instance frozen (SIGSTOP) or cut off inside a transaction, holding an Upload's row
/// lock: another instance's mutations of it give up within the lock timeout (503, nothing
/// changed) instead of waiting, and once the database ends the silent session (its
/// idle-in-transaction timeout, set on every session this pool opens) they succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_frozen_in_a_transaction_loses_its_locks_and_others_wait_bounded() {
    let (_namespace, instances) = instances(2).await;
    let upload = create(&instances[0], 1).await;
    let frozen = instances[0].pool.get().await.unwrap();
    frozen.batch_execute("BEGIN").await.unwrap();
    frozen
        .execute(
            "SELECT 1 FROM uploads WHERE id = $1 FOR UPDATE",
            &[&upload.id.as_str()],
        )
        .await
        .unwrap();
    let scope = Scope::Upload(upload.id.clone());
    let cancel = || {
        instances[1].mutate(&scope, NOW, |ledger, now| {
            ledger.cancel_upload(&owner(), &upload.id, now)
        })
    };
    let mut refusals = 0;
    let cancelled = loop {
        // A hang guard, not a measure.
        match tokio::time::timeout(Duration::from_mins(1), cancel())
            .await
            .expect("a lock wait is bounded")
        {
            Ok(committed) => break committed.response,
            Err(MutationError::Failed(rejection)) => {
                assert_eq!(rejection.status, http::StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(
                    rejection.retry_after_secs,
                    Some(uploads_core::rejection::UNAVAILABLE_RETRY_AFTER_SECS)
                );
                refusals += 1;
                assert!(refusals < 100, "the frozen session was never ended");
            }
            Err(MutationError::Refused(rejection)) => panic!("{rejection}"),
        }
    };
    assert!(refusals >= 1, "the first attempt waited for the lock");
    assert_eq!(cancelled.status, UploadStatus::Cancelled);
    assert!(
        frozen.simple_query("SELECT 1").await.is_err(),
        "the database ended the frozen session"
    );
}

/// An expired Upload that never got a Part has nothing to remove: a sweep neither claims it
/// again and again nor counts it (a caller sweeping until nothing is left would never stop),
/// and it is still answered as expired.
#[tokio::test]
async fn an_expired_upload_without_parts_is_not_swept_for_ever() {
    let (_namespace, instances) = instances(1).await;
    let records = &instances[0];
    let upload = create(records, 1).await;
    let expired = NOW + Limits::default().upload_ttl_secs;
    for _ in 0..3 {
        assert_eq!(records.sweep(expired).await.unwrap().records, 0);
    }
    let status = records
        .read(&Scope::Upload(upload.id.clone()), expired, |ledger, now| {
            Ok(ledger
                .plan_complete(&owner(), &upload.id, br#"{"part_ids":["part_x"]}"#, now)
                .unwrap_err()
                .body
                .error
                .message)
        })
        .await
        .unwrap();
    assert_eq!(status, "Cannot complete an Upload that is already expired.");
}

/// A request collects only what its own change doomed, not the backlog (a slow or silent
/// bucket must not make one cancel wait for every other object due); after a delete that
/// timed out it starts no more, and what it did not delete stays for the sweep.
#[tokio::test]
async fn a_collection_limited_to_some_keys_leaves_the_rest_and_stops_at_a_timeout() {
    let (namespace, instances) = instances(1).await;
    let records = &instances[0];
    let due = NOW + 3 * Limits::default().upload_ttl_secs;
    for key in ["mine/a", "mine/b", "backlog/c"] {
        records.intend(key, NOW).await.unwrap();
    }
    let mine = ["mine/a".to_owned(), "mine/b".to_owned()];
    let deleted = std::sync::Mutex::new(Vec::new());
    let collected = records
        .collect_objects(due, 100, Some(&mine), |key| {
            deleted.lock().unwrap().push(key);
            async { Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!(collected, 2);
    let mut seen = deleted.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, mine);
    // A bucket that times out: no delete is started after the first one failed (those in
    // flight already finish), and nothing timed out is counted.
    for n in 0..40 {
        records.intend(&format!("backlog/{n}"), NOW).await.unwrap();
    }
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let timing_out = records
        .collect_objects(due, 100, None, |_| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(std::io::Error::from(std::io::ErrorKind::TimedOut)) }
        })
        .await
        .unwrap();
    assert_eq!(timing_out, 0);
    let attempts = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(attempts <= DELETES_IN_FLIGHT, "{attempts} deletes tried");
    let left = services::Services::get()
        .psql_on(&namespace.database, "SELECT count(*) FROM doomed_objects");
    assert_eq!(left, "41", "every row stays for a later pass");
}

/// The database falls silent in the middle of a transaction (stopped, or partitioned
/// behind something that still acknowledges packets: no server-side timeout ends that
/// wait, and the connection was already checked out): the mutation gives up after the
/// interaction deadline with a retryable 503 instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_silent_mid_transaction_is_given_up_on() {
    let services = services::Services::get();
    let namespace = services.fresh();
    let proxy = crate::test_proxy::SilencingProxy::start(services.pg_port).await;
    let url = namespace.database_url_via(proxy.port);
    let records = PgRecords::connect(&url, Limits::default()).await.unwrap();
    let upload = create(&records, 1).await;
    let outcome = tokio::time::timeout(
        Duration::from_mins(2),
        records.mutate(&Scope::Upload(upload.id.clone()), NOW, |ledger, now| {
            // The rows are loaded and locked: now the database stops answering.
            proxy.silence();
            ledger.cancel_upload(&owner(), &upload.id, now)
        }),
    )
    .await
    .expect("a hang guard, not a measure: given up within the deadline");
    match outcome {
        Err(MutationError::Failed(rejection)) => {
            assert_eq!(rejection.status.as_u16(), 503);
            assert_eq!(
                rejection.retry_after_secs,
                Some(uploads_core::rejection::UNAVAILABLE_RETRY_AFTER_SECS)
            );
        }
        other => panic!("expected a 503, got {other:?}"),
    }
}
