//! The md5 chain of a pending Upload kept in the database (migration 0004), so that the
//! instances storing its Parts hash them in file order between them and a complete only
//! finishes what is left. The ordering rules are the core's ([`next_in_file_order`],
//! [`Md5Resume::from_saved`]); this module claims, saves and reads the chain's rows.
//!
//! ```text
//! claim (one transaction: the Upload's row locked, its lease free, the Part at the next
//!        position recorded) -> hash its bytes, holding no transaction -> save the state
//!        on the Part's row and advance the Upload's, if the lease is still ours
//! ```
//!
//! A lease lapses by the database's clock: an instance that died while hashing delays the
//! chain by at most [`HASH_LEASE_SECS`], and a complete does not wait that long (it hashes the
//! rest itself).

use std::collections::HashMap;

use uploads_core::digest::{Md5Hasher, Md5Resume, next_in_file_order};
use uploads_core::rejection::Rejection;
use uploads_core::types::{PartId, UploadId};

use super::{Now, PgRecords, bounded, to_i64, unavailable};

/// How long an instance holds an Upload's chain to hash one Part (seconds): far more than
/// reading a 64 MiB Part from the bucket takes.
const HASH_LEASE_SECS: i64 = 60;

/// Parts a claim takes at once: read in one pass, several fetched ahead, as fast as a
/// complete reads them.
const RUN_PARTS: i32 = 8;

/// The next Parts of an Upload's chain (consecutive positions), claimed by this instance to
/// hash.
#[derive(Debug)]
pub(crate) struct ChainClaim {
    /// The Upload.
    pub upload: UploadId,
    /// The Parts to hash, in file order, each with its length.
    pub parts: Vec<(PartId, u64)>,
    /// The state to hash their bytes from: the chain's after its last Part.
    pub state: Md5Hasher,
    /// The first Part's place in the chain.
    index: i32,
    /// The first Part's position in the file.
    position: i32,
    /// The lease, which also tells this claim from a later one.
    lease_until: i64,
}

impl PgRecords {
    /// Claims the next Parts of `upload`'s chain: those recorded at the chain's next
    /// positions, up to the first position not recorded yet (at most [`RUN_PARTS`]), when the
    /// Upload is pending and no other instance holds the chain; else `None`.
    pub(crate) async fn claim_next_to_hash(
        &self,
        upload: &UploadId,
        now: Now,
    ) -> Result<Option<ChainClaim>, Rejection> {
        bounded(async move {
            let failed = |error: &dyn std::error::Error| unavailable(error);
            let mut client = self.pool.get().await.map_err(|error| failed(&error))?;
            let transaction = client.transaction().await.map_err(|error| failed(&error))?;
            let now = to_i64(now.resolve(&*transaction).await.map_err(|e| failed(&e))?);
            let Some(row) = transaction
                .query_opt(
                    "SELECT status, md5_next_position, md5_chained, md5_hashing_until
                     FROM uploads WHERE id = $1 FOR UPDATE",
                    &[&upload.as_str()],
                )
                .await
                .map_err(|error| failed(&error))?
            else {
                return Ok(None);
            };
            let (status, next_position, chained, held_until): (String, i32, i32, Option<i64>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if status != "pending" || held_until.is_some_and(|until| until > now) {
                return Ok(None);
            }
            let candidates = transaction
                .query(
                    "SELECT position, seq, part_id, bytes FROM upload_parts
                     WHERE upload_id = $1 AND position >= $2 AND position < $2 + $3",
                    &[&upload.as_str(), &next_position, &RUN_PARTS],
                )
                .await
                .map_err(|error| failed(&error))?;
            let recorded: Vec<(u32, u64, (String, i64))> = candidates
                .iter()
                .map(|row| {
                    let (position, seq): (i32, i64) = (row.get(0), row.get(1));
                    (
                        u32::try_from(position).unwrap_or(u32::MAX),
                        u64::try_from(seq).unwrap_or(0),
                        (row.get(2), row.get(3)),
                    )
                })
                .collect();
            let first = u32::try_from(next_position).unwrap_or(u32::MAX);
            let parts: Vec<(PartId, u64)> = (first..)
                .map_while(|position| next_in_file_order(position, recorded.iter().cloned()))
                .take(usize::try_from(RUN_PARTS).unwrap_or(1))
                .map(|(part, bytes)| (PartId::new(part), u64::try_from(bytes).unwrap_or(0)))
                .collect();
            if parts.is_empty() {
                return Ok(None);
            }
            let state = if chained == 0 {
                Md5Hasher::new()
            } else {
                let saved = transaction
                    .query_opt(
                        "SELECT md5_after FROM upload_parts
                         WHERE upload_id = $1 AND chain_index = $2",
                        &[&upload.as_str(), &(chained - 1)],
                    )
                    .await
                    .map_err(|error| failed(&error))?
                    .and_then(|row| row.get::<_, Option<Vec<u8>>>(0));
                let Some(state) = saved.as_deref().and_then(Md5Hasher::restore) else {
                    tracing::warn!(%upload, chained, "the md5 chain's last state is unreadable; complete will read the Parts");
                    return Ok(None);
                };
                state
            };
            let lease_until = now + HASH_LEASE_SECS;
            transaction
                .execute(
                    "UPDATE uploads SET md5_hashing_until = $2 WHERE id = $1",
                    &[&upload.as_str(), &lease_until],
                )
                .await
                .map_err(|error| failed(&error))?;
            transaction.commit().await.map_err(|error| failed(&error))?;
            Ok(Some(ChainClaim {
                upload: upload.clone(),
                parts,
                state,
                index: chained,
                position: next_position,
                lease_until,
            }))
        })
        .await
    }

    /// Saves the state after each of the first `states.len()` claimed Parts (those hashed;
    /// a read that failed part-way saves what it hashed) and advances the chain past them,
    /// releasing it; `false` when the claim was lost meanwhile (its lease lapsed and another
    /// instance took the chain).
    pub(crate) async fn save_hashed(
        &self,
        claim: &ChainClaim,
        states: &[Md5Hasher],
    ) -> Result<bool, Rejection> {
        bounded(async move {
            let failed = |error: &dyn std::error::Error| unavailable(error);
            let mut client = self.pool.get().await.map_err(|error| failed(&error))?;
            let transaction = client.transaction().await.map_err(|error| failed(&error))?;
            let hashed = i32::try_from(states.len().min(claim.parts.len())).unwrap_or(0);
            let advanced = transaction
                .execute(
                    "UPDATE uploads SET md5_next_position = $2::int + $5::int,
                         md5_chained = $3::int + $5::int,
                         md5_hashing_until = NULL
                     WHERE id = $1 AND md5_chained = $3 AND md5_hashing_until = $4",
                    &[
                        &claim.upload.as_str(),
                        &claim.position,
                        &claim.index,
                        &claim.lease_until,
                        &hashed,
                    ],
                )
                .await
                .map_err(|error| failed(&error))?;
            if advanced == 0 {
                return Ok(false);
            }
            let part_ids: Vec<&str> = claim.parts.iter().map(|(part, _)| part.as_str()).collect();
            let indexes: Vec<i32> = (claim.index..).take(states.len()).collect();
            let saved: Vec<Vec<u8>> = states.iter().map(Md5Hasher::save).collect();
            transaction
                .execute(
                    "UPDATE upload_parts p SET chain_index = s.chain_index, md5_after = s.state
                     FROM unnest($2::text[], $3::int[], $4::bytea[])
                          AS s(part_id, chain_index, state)
                     WHERE p.upload_id = $1 AND p.part_id = s.part_id",
                    &[
                        &claim.upload.as_str(),
                        &&part_ids[..states.len().min(part_ids.len())],
                        &indexes,
                        &saved,
                    ],
                )
                .await
                .map_err(|error| failed(&error))?;
            transaction.commit().await.map_err(|error| failed(&error))?;
            Ok(true)
        })
        .await
    }

    /// Whether another instance holds `upload`'s chain now (its lease not lapsed).
    pub(crate) async fn chain_held(&self, upload: &UploadId, now: Now) -> Result<bool, Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let now = now
                .resolve(&**client)
                .await
                .map_err(|error| unavailable(&error))?;
            let row = client
                .query_opt(
                    "SELECT md5_hashing_until FROM uploads WHERE id = $1",
                    &[&upload.as_str()],
                )
                .await
                .map_err(|error| unavailable(&error))?;
            Ok(row
                .and_then(|row| row.get::<_, Option<i64>>(0))
                .is_some_and(|until| until > to_i64(now)))
        })
        .await
    }

    /// How to finish the md5 of `listed` from what `upload`'s chain hashed.
    pub(crate) async fn resume_chain(
        &self,
        upload: &UploadId,
        listed: &[PartId],
    ) -> Result<Md5Resume, Rejection> {
        bounded(async move {
            let client = self.pool.get().await.map_err(|error| unavailable(&error))?;
            let rows = client
                .query(
                    "SELECT part_id, chain_index, md5_after FROM upload_parts
                     WHERE upload_id = $1 AND chain_index IS NOT NULL",
                    &[&upload.as_str()],
                )
                .await
                .map_err(|error| unavailable(&error))?;
            let chained: HashMap<String, (i32, Vec<u8>)> = rows
                .iter()
                .map(|row| (row.get(0), (row.get(1), row.get(2))))
                .collect();
            Ok(Md5Resume::from_saved(listed, |index, part| {
                let (at, state) = chained.get(part.as_str())?;
                (usize::try_from(*at).ok()? == index)
                    .then(|| Md5Hasher::restore(state))
                    .flatten()
            }))
        })
        .await
    }
}
