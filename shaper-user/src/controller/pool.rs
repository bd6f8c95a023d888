//! Allocation of per-modem identifiers (data-plane class ids, HTB minors) from a configured
//! range.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

/// The ids of one range that are in use. Allocation hands out the lowest free ids, so the ids
/// a set of modems gets do not depend on the order of earlier removals.
#[derive(Clone, Debug)]
pub struct IdPool {
    range: RangeInclusive<u32>,
    used: BTreeSet<u32>,
}

impl IdPool {
    pub fn new(range: RangeInclusive<u32>) -> Self {
        Self {
            range,
            used: BTreeSet::new(),
        }
    }

    pub fn range(&self) -> &RangeInclusive<u32> {
        &self.range
    }

    pub fn contains(&self, id: u32) -> bool {
        self.range.contains(&id)
    }

    pub fn is_used(&self, id: u32) -> bool {
        self.used.contains(&id)
    }

    /// How many ids are in use.
    pub fn used(&self) -> usize {
        self.used.len()
    }

    /// The `n` lowest free ids, without taking them; `None` if the range has fewer left.
    /// O(ids in use below the result).
    pub fn lowest_free(&self, n: usize) -> Option<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        let mut used = self.used.range(self.range.clone()).peekable();
        let mut id = *self.range.start();
        while out.len() < n {
            if !self.range.contains(&id) {
                return None;
            }
            while used.peek().is_some_and(|&&u| u < id) {
                used.next();
            }
            if used.peek() != Some(&&id) {
                out.push(id);
                if out.len() == n {
                    break;
                }
            }
            id = id.checked_add(1)?;
        }
        Some(out)
    }

    /// Marks `id` used. False if it is outside the range or already used.
    pub fn take(&mut self, id: u32) -> bool {
        self.contains(id) && self.used.insert(id)
    }

    pub fn release(&mut self, id: u32) {
        self.used.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_skips_used_and_respects_the_range() {
        let mut p = IdPool::new(10..=14);
        assert_eq!(p.lowest_free(2), Some(vec![10, 11]));
        assert!(p.take(10));
        assert!(p.take(12));
        assert!(!p.take(12));
        assert!(!p.take(9));
        assert_eq!(p.lowest_free(2), Some(vec![11, 13]));
        assert_eq!(p.lowest_free(3), Some(vec![11, 13, 14]));
        assert_eq!(p.lowest_free(4), None);
        p.release(10);
        assert_eq!(p.lowest_free(1), Some(vec![10]));
        let full = IdPool::new(u32::MAX..=u32::MAX);
        assert_eq!(full.lowest_free(1), Some(vec![u32::MAX]));
        assert_eq!(full.lowest_free(2), None);
    }
}
