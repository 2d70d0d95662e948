//! Errors between layers: each layer fails with a small typed error, erased to [`BoxError`] on the way
//! up; [`cause`] finds one again by its type anywhere in the chain (linkerd's `is_caused_by`).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;

pub use crate::upstream::BoxError;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The first error of type `T` in `error`'s chain of sources, itself included.
pub(crate) fn cause<'a, T: Error + 'static>(mut error: &'a (dyn Error + 'static)) -> Option<&'a T> {
    loop {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        error = error.source()?;
    }
}
