//! What the plugin keeps between runs, laid out so that 100,000 devices fit
//! the host's 1 MiB limit per stored value and a risk notice touches one
//! small value, not the whole fleet.
//!
//! - **The device table** (the devices of the last good sync and the tags
//!   the plugin put on each): a header `devs` ([`Header`]: generation, tag
//!   names, how many chunks the missing list has) and [`BUCKETS`] buckets
//!   `devs/<generation>/<n>`, a device in bucket `id % BUCKETS`. A sync writes a
//!   whole new generation and then the header, so a crash half-way leaves
//!   the previous table whole; a risk notice rewrites one bucket in place.
//! - **Chunked lists** ([`save_list`], [`load_list`]): a list cut into
//!   values of at most [`CHUNK`] items, for a sync's own state between its
//!   invocations and for the missing-device counts.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchyard_sdk::{Error, Result, storage};

/// Buckets of the device table: at 100,000 devices about 800 devices and
/// 60 KB a bucket.
pub const BUCKETS: i64 = 128;

/// Items per chunk of a list: the largest items (a device of a sync in
/// progress, with its UDID) stay well under the 1 MiB value limit.
pub const CHUNK: usize = 8_000;

/// Tag names a device's tags are kept as bits of: at most 64 names.
pub type Mask = u64;

/// A device of the table: its id, the tags the plugin put on it (bits of
/// [`Header::names`]) and, for an iOS device, its UDID (for the app sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dev(pub i64, pub Mask, pub Option<String>);

/// A [`Dev`] to be written, borrowing its UDID: a whole fleet's table is
/// written without copying each device.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DevRef<'a>(pub i64, pub Mask, pub Option<&'a str>);

/// The table's header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Generation: the buckets in use are `devs/<generation>/…`.
    pub generation: u64,
    /// Tag names, by bit.
    pub names: Vec<String>,
    /// Chunks of the missing list (`missing/<generation>/<n>`).
    pub missing_chunks: usize,
    /// Chunks of the departed list (`departed/<generation>/<n>`): devices
    /// that left the chosen groups and still carry tags of this plugin,
    /// as (device id, tags).
    #[serde(default)]
    pub departed_chunks: usize,
}

impl Header {
    /// The header, or none before the first sync.
    pub fn load() -> Result<Option<Self>> {
        storage::get_json("devs")
    }

    /// The bit of tag `name`, added to the names when new.
    pub fn bit(&mut self, name: &str) -> Result<Mask> {
        bit_of(&mut self.names, name)
    }

    /// The names of the bits of `mask`.
    pub fn names_of(&self, mask: Mask) -> impl Iterator<Item = &str> {
        names_of(&self.names, mask)
    }
}

/// The bit of `name` in `names`, added when new.
pub fn bit_of(names: &mut Vec<String>, name: &str) -> Result<Mask> {
    let i = match names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            if names.len() == 64 {
                return Err(Error::invalid_input(format!(
                    "more than 64 different tag names are in use (the 65th is `{name}`): \
                     map threat factors to fewer tags"
                )));
            }
            names.push(name.to_owned());
            names.len() - 1
        }
    };
    Ok(1 << i)
}

/// The names of the bits of `mask`.
pub fn names_of(names: &[String], mask: Mask) -> impl Iterator<Item = &str> {
    names
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.as_str())
}

fn bucket_key(generation: u64, b: i64) -> String {
    format!("devs/{generation}/{b}")
}

/// The bucket device `id` lives in.
pub fn bucket_of(id: i64) -> i64 {
    id.rem_euclid(BUCKETS)
}

/// One bucket of generation `generation`.
pub fn load_bucket(generation: u64, b: i64) -> Result<Vec<Dev>> {
    Ok(storage::get_json(&bucket_key(generation, b))?.unwrap_or_default())
}

/// Rewrites one bucket of generation `generation` in place.
pub fn save_bucket<T: Serialize>(generation: u64, b: i64, devs: &[T]) -> Result<()> {
    storage::set_json(&bucket_key(generation, b), devs)
}

/// Every device of the table, bucket by bucket (each once).
pub fn for_each_dev(h: &Header, mut f: impl FnMut(Dev) -> Result<()>) -> Result<()> {
    for b in 0..BUCKETS {
        for d in load_bucket(h.generation, b)? {
            f(d)?;
        }
    }
    Ok(())
}

/// Writes a whole new table: the devices (`ids`, each one's row made by
/// `dev`), the missing and departed lists, then the header that makes them
/// current; then deletes the old generation.
pub fn save_table<'a>(
    old: Option<&Header>,
    names: Vec<String>,
    mut ids: Vec<i64>,
    dev: impl Fn(i64) -> DevRef<'a>,
    missing: &[(String, u32)],
    departed: &[(i64, Mask)],
) -> Result<Header> {
    let generation = old.map_or(1, |h| h.generation + 1);
    // Only the ids are sorted into bucket order beside the caller's map
    // (8 bytes a device); each bucket's rows are made as it is written.
    ids.sort_unstable_by_key(|&id| (bucket_of(id), id));
    let mut rest = ids.as_slice();
    for b in 0..BUCKETS {
        let n = rest.iter().take_while(|&&id| bucket_of(id) == b).count();
        let (bucket, after) = rest.split_at(n);
        rest = after;
        if bucket.is_empty() {
            // A crashed earlier save may have left this generation's
            // bucket behind.
            storage::delete(&bucket_key(generation, b))?;
        } else {
            let rows: Vec<DevRef<'a>> = bucket.iter().map(|&id| dev(id)).collect();
            save_bucket(generation, b, &rows)?;
        }
    }
    drop(ids);
    let header = Header {
        generation,
        names,
        missing_chunks: save_list(&format!("missing/{generation}"), missing)?,
        departed_chunks: save_list(&format!("departed/{generation}"), departed)?,
    };
    storage::set_json("devs", &header)?;
    if let Some(old) = old {
        for b in 0..BUCKETS {
            storage::delete(&bucket_key(old.generation, b))?;
        }
        delete_list(&format!("missing/{}", old.generation), old.missing_chunks)?;
        delete_list(&format!("departed/{}", old.generation), old.departed_chunks)?;
    }
    Ok(header)
}

/// The missing list of the current table: (MTD device id, syncs missed).
pub fn load_missing(h: &Header) -> Result<Vec<(String, u32)>> {
    load_list(&format!("missing/{}", h.generation), h.missing_chunks)
}

/// The departed list of the current table: (device id, tags still on it).
pub fn load_departed(h: &Header) -> Result<Vec<(i64, Mask)>> {
    load_list(&format!("departed/{}", h.generation), h.departed_chunks)
}

/// Saves `items` as `prefix/0`, `prefix/1`, … of at most [`CHUNK`] items;
/// returns how many chunks. Whoever records that number (in a value
/// written after) makes the list current.
pub fn save_list<T: Serialize>(prefix: &str, items: &[T]) -> Result<usize> {
    save_chunks(prefix, items.chunks(CHUNK))
}

/// [`save_list`] of a list handed over a chunk (of at most [`CHUNK`]
/// items) at a time, so that a list made from another structure is never
/// whole in memory beside it.
pub fn save_chunks<C: Serialize>(
    prefix: &str,
    chunks: impl IntoIterator<Item = C>,
) -> Result<usize> {
    let mut n = 0;
    for chunk in chunks {
        storage::set_json(&format!("{prefix}/{n}"), &chunk)?;
        n += 1;
    }
    Ok(n)
}

/// Reads the `chunks` chunks of a list saved by [`save_list`].
pub fn load_list<T: DeserializeOwned>(prefix: &str, chunks: usize) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_in_list(prefix, chunks, |item| out.push(item))?;
    Ok(out)
}

/// Hands each item of a list saved by [`save_list`] to `f`, one chunk in
/// memory at a time.
pub fn for_each_in_list<T: DeserializeOwned>(
    prefix: &str,
    chunks: usize,
    mut f: impl FnMut(T),
) -> Result<()> {
    for n in 0..chunks {
        let part: Vec<T> = storage::get_json(&format!("{prefix}/{n}"))?.ok_or_else(|| {
            Error::internal(format!("stored list `{prefix}` lacks its chunk {n}"))
        })?;
        part.into_iter().for_each(&mut f);
    }
    Ok(())
}

/// Deletes the chunks of a list.
pub fn delete_list(prefix: &str, chunks: usize) -> Result<()> {
    for n in 0..chunks {
        storage::delete(&format!("{prefix}/{n}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_become_bits_and_back_and_the_65th_is_refused() {
        let mut names = Vec::new();
        let a = bit_of(&mut names, "CHKP_Risk_High").unwrap();
        let b = bit_of(&mut names, "CHKP_Status_Active").unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(
            bit_of(&mut names, "CHKP_Risk_High").unwrap(),
            1,
            "known names keep their bit"
        );
        assert_eq!(
            names_of(&names, a | b).collect::<Vec<_>>(),
            ["CHKP_Risk_High", "CHKP_Status_Active"]
        );
        for i in 2..64 {
            bit_of(&mut names, &format!("t{i}")).unwrap();
        }
        assert_eq!(bit_of(&mut names, "t63").unwrap(), 1 << 63);
        let e = bit_of(&mut names, "one-too-many").unwrap_err().to_string();
        assert!(
            e.contains("more than 64") && e.contains("one-too-many"),
            "{e}"
        );
    }

    #[test]
    fn every_id_has_a_bucket() {
        for id in [-129, -1, 0, 1, 127, 128, i64::MAX, i64::MIN] {
            assert!((0..BUCKETS).contains(&bucket_of(id)), "{id}");
        }
    }
}
