//! Who is asking: the bearer token of a request mapped to the [`Owner`] whose objects it may
//! see, with OpenAI's 401 answers for a missing, malformed or unknown key.

use std::collections::HashMap;

use crate::ledger::Owner;
use crate::rejection::Rejection;

/// API keys and the owner (project) each one acts for. With no key at all the service is
/// open: every request acts for [`ApiKeys::OPEN_OWNER`].
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    owners: HashMap<String, Owner>,
}

impl ApiKeys {
    /// The owner of every object on a service with no keys configured.
    pub const OPEN_OWNER: &'static str = "open";

    /// Accepts `key` for `owner`.
    pub fn insert(&mut self, key: impl Into<String>, owner: Owner) {
        self.owners.insert(key.into(), owner);
    }

    /// Whether no key is configured (the service is open).
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The owner a request acts for, from its `Authorization` header values (raw bytes, as a
    /// header may hold anything); 401 `invalid_api_key` when the service has keys and this
    /// is not one of them. The scheme is case-insensitive (`bearer` is `Bearer`, RFC 9110);
    /// more than one `Authorization` header is refused (which one would count is ambiguous).
    pub fn authenticate<'a>(
        &self,
        authorization: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Owner, Rejection> {
        self.identify(authorization).map(|caller| caller.owner)
    }

    /// Like [`ApiKeys::authenticate`], with the digest of the key that was accepted (`None`
    /// on an open service, whose requests carry no key that counts).
    pub fn identify<'a>(
        &self,
        authorization: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Caller, Rejection> {
        if self.owners.is_empty() {
            return Ok(Caller {
                owner: Owner::new(Self::OPEN_OWNER),
                key: None,
            });
        }
        let mut values = authorization.into_iter();
        let Some(header) = values.next() else {
            return Err(Rejection::invalid_api_key(MISSING_KEY));
        };
        if values.next().is_some() {
            return Err(Rejection::invalid_api_key(DUPLICATE_HEADER));
        }
        let key = std::str::from_utf8(header)
            .ok()
            .and_then(|header| header.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| Rejection::invalid_api_key(MALFORMED_HEADER))?;
        let owner = self.owners.get(key).cloned().ok_or_else(|| {
            Rejection::invalid_api_key(format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                mask(key)
            ))
        })?;
        Ok(Caller {
            owner,
            key: Some(KeyDigest::of(key)),
        })
    }
}

/// Who a request acts for, and with which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The owner whose objects it may see.
    pub owner: Owner,
    /// The key it was accepted with; `None` on an open service.
    pub key: Option<KeyDigest>,
}

/// The SHA-256 of an API key: names the key (its rate limit's bucket, in memory or in a
/// database) without keeping a usable secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of `key`.
    pub fn of(key: &str) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(key.as_bytes()).into())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// OpenAI's message for a request without an `Authorization` header.
const MISSING_KEY: &str = "You didn't provide an API key. You need to provide your API key in \
an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the \
password field (with blank username) if you're accessing the API from your browser and are \
prompted for a username and password. You can obtain an API key from \
https://platform.openai.com/account/api-keys.";

/// The message for an `Authorization` header that is not `Bearer <key>`.
const MALFORMED_HEADER: &str = "Invalid authorization header: expected 'Bearer YOUR_KEY'. You \
can obtain an API key from https://platform.openai.com/account/api-keys.";

/// The message for a request with more than one `Authorization` header.
const DUPLICATE_HEADER: &str = "Invalid authorization header: expected one 'Bearer YOUR_KEY' \
header, got several. You can obtain an API key from https://platform.openai.com/account/api-keys.";

/// A key as OpenAI echoes it: the first and last four characters, the middle starred, so a
/// log of the error never holds a usable secret.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn keys() -> ApiKeys {
        let mut keys = ApiKeys::default();
        keys.insert("sk-alpha-1234567890", Owner::new("proj_a"));
        keys.insert("sk-beta-0987654321", Owner::new("proj_b"));
        keys
    }

    #[test]
    fn each_key_acts_for_its_owner() {
        let keys = keys();
        assert_eq!(
            keys.authenticate(Some(&b"Bearer sk-alpha-1234567890"[..])),
            Ok(Owner::new("proj_a"))
        );
        assert_eq!(
            keys.authenticate(Some(&b"Bearer sk-beta-0987654321 "[..])),
            Ok(Owner::new("proj_b"))
        );
    }

    #[test]
    fn missing_malformed_and_wrong_keys_are_401_invalid_api_key() {
        let keys = keys();
        for header in [
            None,
            Some(&b"sk-alpha-1234567890"[..]),
            Some(b"Basic abc"),
            Some(b"Bearer "),
            Some(b"Bearer \xff"),
        ] {
            let rejection = keys.authenticate(header).unwrap_err();
            assert_eq!(rejection.status, StatusCode::UNAUTHORIZED, "{header:?}");
            assert_eq!(
                rejection.body.error.code.as_deref(),
                Some("invalid_api_key")
            );
            assert_eq!(rejection.body.error.kind, "invalid_request_error");
        }
        let wrong = keys
            .authenticate(Some(&b"Bearer sk-gamma-5555555555"[..]))
            .unwrap_err();
        assert!(
            wrong
                .body
                .error
                .message
                .starts_with("Incorrect API key provided: sk-g***********5555.")
        );
        assert!(!wrong.body.error.message.contains("gamma"));
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_a_second_header_is_refused() {
        let keys = keys();
        for header in [
            &b"bearer sk-alpha-1234567890"[..],
            b"BEARER  sk-alpha-1234567890",
        ] {
            assert_eq!(keys.authenticate(Some(header)), Ok(Owner::new("proj_a")));
        }
        let twice = [
            &b"Bearer sk-alpha-1234567890"[..],
            b"Bearer sk-beta-0987654321",
        ];
        let rejection = keys.authenticate(twice).unwrap_err();
        assert_eq!(rejection.status, StatusCode::UNAUTHORIZED);
        assert_eq!(rejection.body.error.message, DUPLICATE_HEADER);
    }

    #[test]
    fn a_key_is_named_by_its_sha256_never_kept() {
        let caller = keys()
            .identify(Some(&b"Bearer sk-alpha-1234567890"[..]))
            .unwrap();
        assert_eq!(caller.owner, Owner::new("proj_a"));
        let digest = caller.key.unwrap();
        assert_eq!(digest, KeyDigest::of("sk-alpha-1234567890"));
        assert_ne!(digest, KeyDigest::of("sk-beta-0987654321"));
        assert_eq!(ApiKeys::default().identify(None).unwrap().key, None);
    }

    #[test]
    fn an_open_service_serves_everyone_as_one_owner() {
        let open = ApiKeys::default();
        assert_eq!(open.authenticate(None), Ok(Owner::new(ApiKeys::OPEN_OWNER)));
        assert_eq!(
            open.authenticate(Some(&b"Bearer anything"[..])),
            Ok(Owner::new(ApiKeys::OPEN_OWNER))
        );
    }
}
