//! Object storage against the emulator (moto), as `uploads serve` opens it.

use std::time::Duration;

use super::stale::{parse_multipart_uploads, parse_time};
use super::*;
use crate::test_services as services;

/// The emulator's bucket of a fresh namespace, opened as `uploads serve` opens it.
fn bucket() -> (services::Namespace, ObjectBytes) {
    let namespace = services::Services::get().fresh();
    let bytes = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
    (namespace, bytes)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_small_and_multipart_read_back_in_listed_order_and_only_once_committed() {
    let (namespace, bytes) = bucket();
    bytes.check().await.unwrap();
    let bytes = Arc::new(bytes);
    let upload = UploadId::new("upload_1");
    let small = pattern(1000, 1);
    // Past one put: a multipart upload of three pieces, written in uneven chunks.
    let large = pattern(2 * SMALL_OBJECT + 12_345, 2);
    let (store, upload_id, expected) = (
        Arc::clone(&bytes),
        upload.clone(),
        (small.clone(), large.clone()),
    );
    let content = tokio::task::spawn_blocking(move || {
        for (part, data) in [("part_s", &expected.0), ("part_l", &expected.1)] {
            let mut sink = store.begin_part(&upload_id, &PartId::new(part)).unwrap();
            for chunk in data.chunks(700_001) {
                sink.write(chunk).unwrap();
            }
            assert_eq!(sink.commit().unwrap(), data.len() as u64);
        }
        let mut abandoned = store
            .begin_part(&upload_id, &PartId::new("part_x"))
            .unwrap();
        abandoned.write(&pattern(SMALL_OBJECT + 1, 3)).unwrap();
        drop(abandoned);
        let mut content = Vec::new();
        store
            .open(&ContentSource::Parts {
                upload: upload_id.clone(),
                parts: vec![PartId::new("part_l"), PartId::new("part_s")],
            })
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        let missing = store.open(&ContentSource::Parts {
            upload: upload_id,
            parts: vec![PartId::new("part_x")],
        });
        assert!(missing.is_err(), "an abandoned Part has no object");
        content
    })
    .await
    .unwrap();
    assert_eq!(content.len(), large.len() + small.len());
    assert!(content[..large.len()] == large[..] && content[large.len()..] == small[..]);
    let mut keys = services::Services::get().list_objects(&namespace.bucket);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "objects/uploads/upload_1/part_l",
            "objects/uploads/upload_1/part_s"
        ]
    );
    bytes.delete("uploads/upload_1/part_s").await.unwrap();
    bytes.delete("uploads/upload_1/part_s").await.unwrap();
    assert_eq!(
        services::Services::get().list_objects(&namespace.bucket),
        vec!["objects/uploads/upload_1/part_l"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named() {
    let namespace = services::Services::get().fresh();
    let url = namespace
        .object_store
        .replace(&namespace.bucket, "no-such-bucket");
    let bytes = ObjectBytes::open(&url, namespace.s3_env()).unwrap();
    let message = bytes.check().await.unwrap_err().to_string();
    assert!(
        message.contains("cannot reach the object store"),
        "{message}"
    );
}

/// A bucket endpoint that accepts connections and never answers (a silent bucket).
fn black_hole() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bucket_fails_the_check_naming_it_instead_of_hanging() {
    let env = vec![
        ("AWS_ENDPOINT_URL", black_hole()),
        ("AWS_ACCESS_KEY_ID", services::S3_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", services::S3_SECRET.to_owned()),
        ("AWS_REGION", services::S3_REGION.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ];
    let bytes = ObjectBytes::open("s3://silent-bucket/objects", env).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), bytes.check())
        .await
        .expect("the check answers")
        .unwrap_err()
        .to_string();
    assert!(message.contains("silent-bucket"), "{message}");

    // Every other call fails within its request timeout too (the service answers 500).
    let bytes = Arc::new(bytes.with_request_timeout(Duration::from_millis(500)));
    let keys = vec!["uploads/upload_1/part_1".to_owned()];
    let error = tokio::time::timeout(Duration::from_secs(20), bytes.missing(&keys))
        .await
        .expect("missing answers")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    assert!(error.to_string().contains("silent-bucket"), "{error}");
    let deleted = tokio::time::timeout(Duration::from_secs(20), bytes.delete(&keys[0]));
    assert!(deleted.await.expect("delete answers").is_err());
    let store = Arc::clone(&bytes);
    let blocking = tokio::task::spawn_blocking(move || {
        let upload = UploadId::new("upload_1");
        let mut small = store.begin_part(&upload, &PartId::new("part_s")).unwrap();
        small.write(b"hello").unwrap();
        assert!(small.commit().is_err(), "a small put fails");
        let mut large = store.begin_part(&upload, &PartId::new("part_l")).unwrap();
        assert!(
            large.write(&pattern(SMALL_OBJECT + 1, 1)).is_err(),
            "a multipart upload fails"
        );
        let opened = store.open(&ContentSource::Direct(FileId::new("file_1")));
        assert!(opened.is_err(), "a download fails before its 200");
    });
    tokio::time::timeout(Duration::from_secs(30), blocking)
        .await
        .expect("the blocking calls answer")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_names_the_absent_keys_in_order() {
    let (_namespace, bytes) = bucket();
    let bytes = Arc::new(bytes);
    let store = Arc::clone(&bytes);
    let keys: Vec<String> = (0..40)
        .map(|n| format!("uploads/upload_1/part_{n}"))
        .collect();
    let written = keys.clone();
    tokio::task::spawn_blocking(move || {
        for (n, key) in written.iter().enumerate() {
            if n % 7 != 3 {
                let part = key.rsplit('/').next().unwrap();
                let mut sink = store
                    .begin_part(&UploadId::new("upload_1"), &PartId::new(part))
                    .unwrap();
                sink.write(&pattern(10, 0)).unwrap();
                sink.commit().unwrap();
            }
        }
    })
    .await
    .unwrap();
    let expected: Vec<String> = keys
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 7 == 3)
        .map(|(_, key)| key.clone())
        .collect();
    assert_eq!(bytes.missing(&keys).await.unwrap(), expected);
    assert!(bytes.missing(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_parts_read_in_order_and_a_missing_one_cuts_the_read() {
    let (_namespace, bytes) = bucket();
    let store = Arc::new(bytes);
    tokio::task::spawn_blocking(move || {
        let upload = UploadId::new("upload_1");
        let parts: Vec<PartId> = (0..30).map(|n| PartId::new(format!("part_{n}"))).collect();
        let mut expected = Vec::new();
        for (n, part) in parts.iter().enumerate() {
            let data = pattern(1000 + n * 37, u8::try_from(n).unwrap());
            let mut sink = store.begin_part(&upload, part).unwrap();
            sink.write(&data).unwrap();
            sink.commit().unwrap();
            expected.extend_from_slice(&data);
        }
        let source = ContentSource::Parts {
            upload: upload.clone(),
            parts: parts.clone(),
        };
        let mut content = Vec::new();
        store
            .open(&source)
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert!(content == expected, "the bytes of every Part, in order");

        // Part 20 deleted behind the server: the read fails where it is reached.
        store.remove_parts(&upload, &parts[20..21]).unwrap();
        let mut reader = store.open(&source).unwrap();
        let mut content = Vec::new();
        let error = reader.read_to_end(&mut content).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        assert!(content.len() < expected.len(), "never silently short");
        // The first one gone: an error from `open`, before any byte.
        store.remove_parts(&upload, &parts[..1]).unwrap();
        assert!(store.open(&source).is_err());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sinks_stay_within_the_memory_budget_and_all_complete_byte_exact() {
    let (_namespace, bytes) = bucket();
    let bytes = Arc::new(bytes.with_memory_budget(MIN_MEMORY_BUDGET));
    let store = Arc::clone(&bytes);
    let upload = UploadId::new("upload_1");
    // Four Parts of three pieces, four small ones: all stall with 3 MiB gathered
    // (24 MiB, more than the budget), then go on at once.
    let sizes: Vec<usize> = (0..8)
        .map(|n| {
            if n % 2 == 0 {
                2 * SMALL_OBJECT + 4321
            } else {
                3 << 20
            }
        })
        .collect();
    let expected = sizes.clone();
    let upload_id = upload.clone();
    tokio::task::spawn_blocking(move || {
        let stalled = std::sync::Barrier::new(expected.len());
        std::thread::scope(|scope| {
            for (n, size) in expected.iter().enumerate() {
                let (store, stalled, upload) = (&store, &stalled, &upload_id);
                scope.spawn(move || {
                    let data = pattern(*size, u8::try_from(n).unwrap());
                    let part = PartId::new(format!("part_{n}"));
                    let mut sink = store.begin_part(upload, &part).unwrap();
                    let (first, rest) = data.split_at(3 << 20);
                    for chunk in first.chunks(1 << 20) {
                        sink.write(chunk).unwrap();
                    }
                    stalled.wait();
                    for chunk in rest.chunks(1 << 20) {
                        sink.write(chunk).unwrap();
                    }
                    assert_eq!(sink.commit().unwrap(), *size as u64);
                });
            }
        });
    })
    .await
    .unwrap();
    assert!(
        bytes.memory_peak() <= MIN_MEMORY_BUDGET,
        "held {} bytes at once",
        bytes.memory_peak()
    );
    assert_eq!(bytes.memory_held(), 0, "every reservation returned");
    let store = Arc::clone(&bytes);
    tokio::task::spawn_blocking(move || {
        for (n, size) in sizes.iter().enumerate() {
            let mut content = Vec::new();
            store
                .open(&ContentSource::Parts {
                    upload: upload.clone(),
                    parts: vec![PartId::new(format!("part_{n}"))],
                })
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            assert!(
                content == pattern(*size, u8::try_from(n).unwrap()),
                "part {n}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_multipart_uploads_are_aborted_and_those_being_written_kept() {
    let (namespace, sweeper) = bucket();
    // Another instance, killed while its Part was past one piece: its sink never
    // commits nor drops.
    let crashed = ObjectBytes::open(&namespace.object_store, namespace.s3_env()).unwrap();
    let sweeper = Arc::new(sweeper);
    let writer = Arc::clone(&sweeper);
    let upload = UploadId::new("upload_1");
    let upload_id = upload.clone();
    let live = tokio::task::spawn_blocking(move || {
        let mut lost = crashed
            .begin_part(&upload_id, &PartId::new("part_lost"))
            .unwrap();
        lost.write(&pattern(SMALL_OBJECT + 1, 1)).unwrap();
        std::mem::forget(lost);
        let mut live = writer
            .begin_part(&upload_id, &PartId::new("part_live"))
            .unwrap();
        live.write(&pattern(SMALL_OBJECT + 1, 2)).unwrap();
        live
    })
    .await
    .unwrap();
    let services = services::Services::get();
    let mut under_way = services.list_multipart_uploads(&namespace.bucket);
    under_way.sort();
    assert_eq!(
        under_way,
        [
            "objects/uploads/upload_1/part_live",
            "objects/uploads/upload_1/part_lost"
        ]
    );
    // Nothing began before 1970; moto dates every upload 2010-11-10, so "now" is past
    // both, and only the one no sink of this process writes goes.
    let epoch = SystemTime::UNIX_EPOCH;
    let nothing_wanted = |_| async { Ok(std::collections::HashSet::new()) };
    assert_eq!(
        sweeper
            .abort_stale_multipart(epoch, nothing_wanted)
            .await
            .unwrap(),
        0
    );
    let now = SystemTime::now();
    // What the records still want is kept, whatever the bucket's dates say.
    let lost = "uploads/upload_1/part_lost".to_owned();
    let wanted = std::collections::HashSet::from([lost.clone()]);
    assert_eq!(
        sweeper
            .abort_stale_multipart(now, |candidates| async move {
                assert_eq!(candidates, [lost]);
                Ok(wanted)
            })
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sweeper
            .abort_stale_multipart(now, nothing_wanted)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        services.list_multipart_uploads(&namespace.bucket),
        ["objects/uploads/upload_1/part_live"]
    );
    let committed = tokio::task::spawn_blocking(move || live.commit().unwrap());
    assert_eq!(committed.await.unwrap(), SMALL_OBJECT as u64 + 1);
    assert!(
        services
            .list_multipart_uploads(&namespace.bucket)
            .is_empty()
    );
    assert_eq!(
        services.list_objects(&namespace.bucket),
        ["objects/uploads/upload_1/part_live"]
    );
}

#[test]
fn a_list_of_multipart_uploads_is_read_with_its_dates_and_next_page() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><IsTruncated>true</IsTruncated>
  <NextKeyMarker>objects/uploads/u/p&amp;2</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker>
  <Upload><Key>objects/uploads/u/p1</Key><UploadId>id-1</UploadId>
<Initiated>2026-12-07T09:44:59.000Z</Initiated></Upload>
  <Upload><Key>objects/uploads/u/p&amp;2</Key><UploadId>id-2</UploadId>
<Initiated>2000-02-29T23:59:59Z</Initiated></Upload>
  <Upload><Key>objects/uploads/u/p3</Key><UploadId>id-3</UploadId>
<Initiated>yesterday</Initiated></Upload>
</ListMultipartUploadsResult>"#;
    let at = |seconds| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
    let (uploads, next) = parse_multipart_uploads(xml);
    assert_eq!(
        uploads,
        [
            InProgress {
                key: "objects/uploads/u/p1".to_owned(),
                upload_id: "id-1".to_owned(),
                initiated: at(1_796_636_699),
            },
            InProgress {
                key: "objects/uploads/u/p&2".to_owned(),
                upload_id: "id-2".to_owned(),
                initiated: at(951_868_799),
            },
            InProgress {
                key: "objects/uploads/u/p3".to_owned(),
                upload_id: "id-3".to_owned(),
                initiated: None,
            },
        ]
    );
    assert_eq!(
        next,
        Some(("objects/uploads/u/p&2".to_owned(), "id-2".to_owned()))
    );
    let last = xml.replace("<IsTruncated>true", "<IsTruncated>false");
    assert_eq!(parse_multipart_uploads(&last).1, None);
    assert_eq!(parse_time("1970-01-02T00:00:01.000Z"), at(86_401));
}

#[tokio::test]
async fn waiting_for_memory_is_bounded_and_room_comes_back_when_released() {
    let budget = MemoryBudget::new(0);
    assert_eq!(
        budget.bytes, MIN_MEMORY_BUDGET,
        "raised to the smallest budget"
    );
    let wait = Duration::from_millis(100);
    let all = budget.send(MIN_MEMORY_BUDGET, wait).await.unwrap();
    assert!(budget.try_gather(1).is_none(), "a gathering never waits");
    let guard = Duration::from_secs(20);
    let error = tokio::time::timeout(guard, budget.send(1, wait))
        .await
        .expect("the wait is bounded")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    drop(all);
    assert_eq!(budget.held.load(Ordering::SeqCst), 0);
    let piece = budget.send(SMALL_OBJECT, wait).await.unwrap();
    // Gathering leaves half the budget to pieces being sent.
    assert!(budget.try_gather(1).is_none());
    drop(piece);
    let gathered = budget.try_gather(MIN_MEMORY_BUDGET / 2).unwrap();
    assert!(budget.try_gather(1).is_none());
    drop(gathered);
    assert_eq!(budget.peak.load(Ordering::SeqCst), MIN_MEMORY_BUDGET);
}
