//! A table of records (users by `uid`, devices by `ppn`) with an index on one attribute
//! (`num`, `ipei`), so a lookup costs the same with 10 records and with 10,000.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Deref, DerefMut};

use crate::state::Attrs;

/// Records by id plus `attribute value → ids` for the indexed attribute. Several ids may share
/// a value (the OMM may allow duplicate numbers); a lookup returns the lowest.
#[derive(Debug)]
pub(crate) struct Table {
    rows: BTreeMap<u32, Attrs>,
    attr: &'static str,
    index: HashMap<String, BTreeSet<u32>>,
}

impl Table {
    pub(crate) fn new(attr: &'static str) -> Self {
        Self {
            rows: BTreeMap::new(),
            attr,
            index: HashMap::new(),
        }
    }

    fn unindex(index: &mut HashMap<String, BTreeSet<u32>>, value: Option<&String>, id: u32) {
        if let Some(v) = value {
            if let Some(ids) = index.get_mut(v) {
                ids.remove(&id);
                if ids.is_empty() {
                    index.remove(v);
                }
            }
        }
    }

    pub(crate) fn insert(&mut self, id: u32, attrs: Attrs) {
        if let Some(old) = self.rows.remove(&id) {
            Self::unindex(&mut self.index, old.get(self.attr), id);
        }
        if let Some(v) = attrs.get(self.attr) {
            self.index.entry(v.clone()).or_default().insert(id);
        }
        self.rows.insert(id, attrs);
    }

    pub(crate) fn remove(&mut self, id: &u32) -> Option<Attrs> {
        let old = self.rows.remove(id)?;
        Self::unindex(&mut self.index, old.get(self.attr), *id);
        Some(old)
    }

    pub(crate) fn get(&self, id: &u32) -> Option<&Attrs> {
        self.rows.get(id)
    }

    /// The record for changing; the index follows when the guard is dropped.
    pub(crate) fn get_mut(&mut self, id: &u32) -> Option<RowMut<'_>> {
        let Self { rows, attr, index } = self;
        let row = rows.get_mut(id)?;
        Some(RowMut {
            id: *id,
            before: row.get(*attr).cloned(),
            row,
            attr,
            index,
        })
    }

    pub(crate) fn contains_key(&self, id: &u32) -> bool {
        self.rows.contains_key(id)
    }

    /// The lowest id whose indexed attribute is `value`.
    pub(crate) fn find(&self, value: &str) -> Option<u32> {
        self.index.get(value)?.first().copied()
    }

    /// Whether an id other than `except` has `value`.
    pub(crate) fn taken(&self, value: &str, except: u32) -> bool {
        self.index
            .get(value)
            .is_some_and(|ids| ids.iter().any(|i| *i != except))
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u32, &Attrs)> {
        self.rows.iter()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Attrs> {
        self.rows.values()
    }

    pub(crate) fn first_id(&self) -> Option<u32> {
        self.rows.keys().next().copied()
    }

    /// Ids from `from` upwards, in order.
    pub(crate) fn ids_from(&self, from: u32) -> impl Iterator<Item = u32> + '_ {
        self.rows.range(from..).map(|(k, _)| *k)
    }
}

impl std::ops::Index<&u32> for Table {
    type Output = Attrs;

    fn index(&self, id: &u32) -> &Attrs {
        &self.rows[id]
    }
}

/// A record being changed.
pub(crate) struct RowMut<'a> {
    id: u32,
    before: Option<String>,
    row: &'a mut Attrs,
    attr: &'a str,
    index: &'a mut HashMap<String, BTreeSet<u32>>,
}

impl Deref for RowMut<'_> {
    type Target = Attrs;

    fn deref(&self) -> &Attrs {
        self.row
    }
}

impl DerefMut for RowMut<'_> {
    fn deref_mut(&mut self) -> &mut Attrs {
        self.row
    }
}

impl Drop for RowMut<'_> {
    fn drop(&mut self) {
        let now = self.row.get(self.attr);
        if now != self.before.as_ref() {
            Table::unindex(self.index, self.before.as_ref(), self.id);
            if let Some(v) = now {
                self.index.entry(v.clone()).or_default().insert(self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(num: &str) -> Attrs {
        [("num".to_owned(), num.to_owned())].into_iter().collect()
    }

    #[test]
    fn the_index_follows_inserts_changes_and_removals() {
        let mut t = Table::new("num");
        t.insert(1, rec("2001"));
        t.insert(2, rec("2002"));
        t.insert(3, rec("2002"));
        assert_eq!(t.find("2001"), Some(1));
        assert_eq!(t.find("2002"), Some(2));
        assert!(t.taken("2002", 2));
        assert!(!t.taken("2001", 1));
        t.get_mut(&2)
            .expect("row")
            .insert("num".into(), "3000".into());
        assert_eq!(t.find("2002"), Some(3));
        assert_eq!(t.find("3000"), Some(2));
        t.get_mut(&3).expect("row").remove("num");
        assert_eq!(t.find("2002"), None);
        t.insert(1, rec("4000"));
        assert_eq!(t.find("2001"), None);
        assert_eq!(
            t.remove(&1).map(|r| r["num"].clone()).as_deref(),
            Some("4000")
        );
        assert_eq!(t.find("4000"), None);
        assert_eq!(t.ids_from(2).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(t.len(), 2);
    }
}
