//! A value a reload may replace while every task keeps reading it through `Deref`.

use std::ops::Deref;
use std::sync::{PoisonError, RwLock};

/// A value that a reload may replace while every task keeps reading it through `Deref`.
///
/// Readers get a plain `&T` with no lock held and no guard to carry across `.await`, so
/// `shared.config.limits.x` keeps working everywhere. The price: a replaced value is leaked,
/// not freed (a reader may still hold it). Replacement happens only on an admin's reload,
/// so that is a few kilobytes per reload.
pub struct Live<T: 'static>(RwLock<&'static T>);

impl<T: 'static> Live<T> {
    /// Holds `value`.
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Box::leak(Box::new(value))))
    }

    /// The value in force now.
    pub fn get(&self) -> &'static T {
        // A poisoned lock still holds a valid reference: writes are a single assignment.
        *self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `value` in force for every later read.
    pub(crate) fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Box::leak(Box::new(value));
    }
}

impl<T: 'static> Deref for Live<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_value_is_replaced_for_later_reads() {
        let live = Live::new(1u32);
        let before: &u32 = &live;
        live.replace(2);
        assert_eq!((*before, *live), (1, 2));
    }
}
