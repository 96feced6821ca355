//! The one entry point through which the APIs (EC2, Walrus) authenticate a SigV4-signed
//! request, in header or presigned form: parse the claim, find the user holding the access
//! key, verify the signature under the API's policy. Walrus's SigV2 presigned URLs use the same
//! user lookup, and Walrus finds the user in the read of the store that also finds what the
//! request names (`authenticate_with`).

use super::{parse, verify, AuthError, Policy, RequestView, Verified};
use crate::store::{Store, StoreError, User};

/// The user who signed `parts` and what the signature covers.
pub fn authenticate<E>(
    store: &Store,
    parts: &http::request::Parts,
    policy: &Policy<'_>,
) -> Result<(User, Verified), E>
where
    E: From<AuthError> + From<StoreError>,
{
    authenticate_with(|key| store.user_by_access_key(key), parts, policy)
}

/// [`authenticate`] with the user holding an access key found by `find` (as
/// [`Store::user_by_access_key`] does: a caller reading more in the same read of the store).
pub fn authenticate_with<E>(
    find: impl FnOnce(&str) -> Result<Option<User>, StoreError>,
    parts: &http::request::Parts,
    policy: &Policy<'_>,
) -> Result<(User, Verified), E>
where
    E: From<AuthError> + From<StoreError>,
{
    let raw_query = parts.uri.query().unwrap_or("");
    let claim = parse(&parts.headers, raw_query)?.ok_or(AuthError::Anonymous)?;
    let user = user::<E>(find, &claim.access_key)?;
    let view = RequestView {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query,
        headers: &parts.headers,
    };
    let verified = verify(&claim, &user.secret, &view, policy)?;
    Ok((user, verified))
}

/// The user holding `access_key`, found by `find` ([`Store::user_by_access_key`] or the same
/// in a [`crate::store::Reads`]); a disabled user's key finds no one and is refused as an
/// unknown one (`AuthFailure` in EC2, `InvalidAccessKeyId` in S3, `InvalidClientTokenId` in
/// STS/IAM, as AWS answers an inactive key).
pub fn user<E>(
    find: impl FnOnce(&str) -> Result<Option<User>, StoreError>,
    access_key: &str,
) -> Result<User, E>
where
    E: From<AuthError> + From<StoreError>,
{
    find(access_key)?.ok_or_else(|| AuthError::UnknownAccessKey.into())
}
