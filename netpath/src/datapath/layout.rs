//! Versioned pinned layouts: what a restarted (or upgraded) daemon does with maps pinned
//! by another build.
//!
//! The maps of a build have one layout number, [`LAYOUT`], bumped whenever a map's keys,
//! values or their meaning change; [`CHANGES`] says which maps each layout changed, so a
//! map's *version* in layout N is 1 + the changes to it up to N. A datapath records its
//! layout in the kernel itself: the marker map `NETPATH_LAYOUT` holds nothing and has
//! `LAYOUT` entries, so its pinned size *is* the layout (no marker: layout 1, from
//! before the marker existed). A map is stale when its version or its shape as the
//! kernel reports it (type, key and value size, entries, flags) differs from this
//! build's.
//!
//! At start, each stale map is *migrated*: its pin moves to `<root>/migrating/<MAP>`, the
//! programs are loaded with a fresh map in its place (the other maps are shared), and the
//! entries are copied across — once before the programs are switched over, and once more
//! after ([`finish`]), with `BPF_NOEXIST`, for the entries the old programs made
//! meanwhile. Established connections keep their translations. A map whose keys or
//! values changed size cannot be copied unless [`convert`] has a rule that widens them
//! ([`convert::reshapes`]): otherwise the daemon refuses to start unless `--reload` is
//! given, which drops such maps' entries.

use std::{fmt, fs, path::Path};

use aya::maps::{MapData, MapInfo};
use netpath_common::maps::LAYOUT;

use super::{convert, *};

/// The maps each layout changed, from layout 2 on (layout 1 is where versions began).
/// - 2: `NETPATH_DROPS`: `nat_failed` split into `nat_rewrite_failed` (the old slot) and
///   the new `nat_ports_exhausted` and `nat_map_full` (two more slots).
/// - 3: `NETPATH_DROPS`: `ipv6_not_enabled` (one more slot).
/// - 4: `NETPATH_STATS`: five IPv6 classes (slot `ipv6` became `ipv6_other`), which
///   moves every hook's block but the first ([`convert`] moves the counters along);
///   `NETPATH_DROPS`: four reasons of the IPv6 guard. (And a new map,
///   `NETPATH_ENDPOINTS6`, which a start creates.)
/// - 5: `NETPATH_DROPS`: `fragment_unseen` (one more slot). (And the fragment maps
///   `NETPATH_FRAG`/`NETPATH_FRAG6`, which a start creates.)
/// - 6: `NETPATH_DROPS`: a block of reasons per hook (`drop_index`); the counts from
///   before, which had no hook, move to the `tc_ingress` block ([`convert`]).
/// - 7: `NETPATH_NAT_AGE`/`6`: a creation time (12-byte values); `NETPATH_DNAT_CT`/`6`:
///   a clock and a state beside the front (`CtFront`, 16 and 28 bytes), so that
///   published connections show their age and expire in `netpath flows`. Their values
///   grew: [`convert`] widens them.
/// - 8: `NETPATH_DROPS`: `isolated`, `internal_network` and `egress_denied` (three more
///   slots per hook's block, which moves every block but the first: [`convert`] moves
///   the counters). (And the network policy maps `NETPATH_NETWORKS`, `NETPATH_EGRESS`
///   and `NETPATH_EGRESS6`, which a start creates.)
pub const CHANGES: [(u32, &[&str]); 7] = [
    (2, &[DROPS_MAP]),
    (3, &[DROPS_MAP]),
    (4, &[STATS_MAP, DROPS_MAP]),
    (5, &[DROPS_MAP]),
    (6, &[DROPS_MAP]),
    (7, &[NAT_AGE_MAP, NAT_AGE6_MAP, DNAT_CT_MAP, DNAT_CT6_MAP]),
    (8, &[DROPS_MAP]),
];
const _: () = assert!(
    CHANGES[CHANGES.len() - 1].0 == LAYOUT,
    "record the change of LAYOUT"
);

/// The version of map `name` in layout `layout`.
pub fn version_in(name: &str, layout: u32) -> u32 {
    let changes = CHANGES
        .iter()
        .filter(|(l, maps)| *l <= layout && maps.contains(&name))
        .count();
    1 + changes as u32
}

/// This build's version of map `name`.
pub fn version_of(name: &str) -> u32 {
    version_in(name, LAYOUT)
}

/// The layout of the datapath pinned at `pins` (1 when it has no marker).
pub fn pinned_layout(pins: &Pins) -> Result<u32> {
    let path = pins.map(LAYOUT_MAP);
    if !path.exists() {
        return Ok(1);
    }
    Ok(pinned_shape(&path)?.max_entries)
}

/// A map's shape as the kernel reports it (`bpf_map_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: u32,
    pub shape: Shape,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layout {} ({})", self.version, self.shape)
    }
}

/// A pinned map whose layout is not this build's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub name: &'static str,
    pub pinned: Layout,
    pub wanted: Layout,
}

impl Stale {
    /// Whether the entries can be carried over: keys and values kept their size (a new
    /// version may change what they mean or where they sit, which [`convert`] handles),
    /// or [`convert`] turns the pinned version's values into this build's.
    pub fn migratable(&self) -> bool {
        let (a, b) = (self.pinned.shape, self.wanted.shape);
        a.map_type == b.map_type
            && a.key_size == b.key_size
            && (a.value_size == b.value_size || convert::reshapes(self.name, self.pinned.version))
    }
}

/// The shape of every map of `object`, by name (an object of an older build may lack
/// some of [`MAPS`]; the layout marker, say).
pub fn wanted_shapes(object: &[u8]) -> Result<Vec<(&'static str, Shape)>> {
    let obj = aya_obj::Object::parse(object).map_err(|e| DatapathError::Layout {
        detail: format!("the eBPF object does not parse: {e}"),
    })?;
    Ok(MAPS
        .iter()
        .filter_map(|&name| {
            let m = obj.maps.get(name)?;
            Some((
                name,
                Shape {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                    flags: m.map_flags(),
                },
            ))
        })
        .collect())
}

fn pinned_shape(path: &Path) -> Result<Shape> {
    let info = MapInfo::from_pin(path).map_err(|source| DatapathError::OpenMap {
        path: path.to_owned(),
        source,
    })?;
    Ok(Shape {
        map_type: info.map_type().map_or(0, |t| t as u32),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// The pinned maps whose layout differs from `wanted`'s.
pub fn stale_maps(pins: &Pins, wanted: &[(&'static str, Shape)]) -> Result<Vec<Stale>> {
    let layout = pinned_layout(pins)?;
    let mut stale = Vec::new();
    for &(name, shape) in wanted {
        let path = pins.map(name);
        // The marker is replaced, never migrated: it holds nothing.
        if name == LAYOUT_MAP || !path.exists() {
            continue;
        }
        let pinned = Layout {
            version: version_in(name, layout),
            shape: pinned_shape(&path)?,
        };
        let wanted = Layout {
            version: version_of(name),
            shape,
        };
        if pinned != wanted {
            stale.push(Stale {
                name,
                pinned,
                wanted,
            });
        }
    }
    Ok(stale)
}

/// Where a migrated map's old pin waits until the migration finishes (bpffs refuses
/// names with a dot, so a directory of their own rather than a suffix).
pub fn old_pin(pins: &Pins, name: &str) -> std::path::PathBuf {
    pins.root().join("migrating").join(name)
}

/// `BPF_NOEXIST` (uapi `linux/bpf.h`): an update that only creates.
const BPF_NOEXIST: u64 = 1;

/// One map being migrated from the layout version `from`; its old pin is [`old_pin`]
/// until the migration finishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub name: &'static str,
    pub from: u32,
    /// Entries copied so far.
    pub copied: usize,
}

impl Migration {
    /// Copies the old map's entries into the new one (all of them; with `only_new`,
    /// those the new map lacks, and no counters).
    pub fn copy(&mut self, pins: &Pins, only_new: bool) -> Result<()> {
        let open = |path: std::path::PathBuf| {
            let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenMap {
                path: path.clone(),
                source,
            })?;
            Map::from_map_data(data).map_err(|source| DatapathError::OpenMap { path, source })
        };
        let old = open(old_pin(pins, self.name))?;
        let new = open(pins.map(self.name))?;
        let flags = if only_new { BPF_NOEXIST } else { 0 };
        self.copied += convert::copy_entries(self.name, self.from, old, new, flags, only_new)?;
        Ok(())
    }
}

/// Before the programs load: finds the pinned maps whose layout is not `object`'s and
/// moves their pins aside ([`old_pin`]), so the load makes fresh ones; with `reload`,
/// removes them instead (their entries are lost). Refuses maps whose entries cannot be
/// copied, unless `reload`. Returns the migrations to run, including those a previous
/// start left unfinished (an old pin still there).
pub fn prepare(pins: &Pins, object: &[u8], reload: bool) -> Result<Vec<Migration>> {
    let wanted = wanted_shapes(object)?;
    let stale = stale_maps(pins, &wanted)?;
    let marker = wanted
        .iter()
        .find(|(m, _)| *m == LAYOUT_MAP)
        .map(|(_, s)| *s);
    let pinned_marker = pins.map(LAYOUT_MAP);
    if pinned_marker.exists() && Some(pinned_shape(&pinned_marker)?) != marker {
        // Another layout's marker: the load pins this object's.
        remove_file_if_exists(&pinned_marker)?;
    }
    let mut migrations = Vec::new();
    for s in stale {
        let pin = pins.map(s.name);
        if reload {
            remove_file_if_exists(&pin)?;
            continue;
        }
        if !s.migratable() {
            return Err(DatapathError::LayoutRefused {
                name: s.name,
                pinned: s.pinned.to_string(),
                wanted: s.wanted.to_string(),
            });
        }
        let old = old_pin(pins, s.name);
        let dir = pins.root().join("migrating");
        fs::create_dir_all(&dir).map_err(|source| DatapathError::PinDir { path: dir, source })?;
        // A leftover of an unfinished migration is older still: this one replaces it.
        remove_file_if_exists(&old)?;
        fs::rename(&pin, &old).map_err(|source| DatapathError::Rename {
            from: pin.clone(),
            to: old.clone(),
            source,
        })?;
        migrations.push(Migration {
            name: s.name,
            from: s.pinned.version,
            copied: 0,
        });
    }
    for name in MAPS {
        if name == LAYOUT_MAP {
            continue;
        }
        let unfinished = old_pin(pins, name).exists() && !migrations.iter().any(|m| m.name == name);
        if unfinished && reload {
            remove_file_if_exists(&old_pin(pins, name))?;
        } else if unfinished {
            migrations.push(Migration {
                name,
                from: version_of(name),
                copied: 0,
            });
        }
    }
    Ok(migrations)
}

/// After the programs run on the new maps (every attachment switched over): copies the
/// entries the old programs made meanwhile and removes the old pins. Returns a line per
/// map migrated.
pub fn finish(pins: &Pins, migrations: &mut Vec<Migration>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for mut m in migrations.drain(..) {
        m.copy(pins, true)?;
        remove_file_if_exists(&old_pin(pins, m.name))?;
        lines.push(format!(
            "migrated {} from layout {} to {} ({} entries carried over)",
            m.name,
            m.from,
            version_of(m.name),
            m.copied
        ));
    }
    // Empty now (if it exists); should that fail, `netpath reset` removes it.
    let _ = fs::remove_dir(pins.root().join("migrating"));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(value_size: u32, max_entries: u32) -> Shape {
        Shape {
            map_type: 6,
            key_size: 4,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    #[test]
    fn a_maps_version_counts_its_changes_up_to_the_layout() {
        assert_eq!(version_in(DROPS_MAP, 1), 1);
        assert_eq!(version_in(DROPS_MAP, 2), 2);
        assert_eq!(version_in(DROPS_MAP, 3), 3);
        assert_eq!(version_in(SNAT_MAP, 4), 1, "not changed by layouts 2 to 4");
        assert_eq!(version_of(ENDPOINTS_MAP), 1);
        assert_eq!(version_of(STATS_MAP), 2);
        assert_eq!(version_in(DROPS_MAP, 4), 4);
        assert_eq!(version_in(DROPS_MAP, 7), 6);
        assert_eq!(version_of(DROPS_MAP), 7);
        assert_eq!(version_in(DNAT_CT_MAP, 6), 1);
        assert_eq!(version_of(DNAT_CT_MAP), 2);
        assert_eq!(version_of(NAT_AGE6_MAP), 2);
        // Every map a change names is one of the loader's.
        for (_, maps) in CHANGES {
            assert!(maps.iter().all(|m| MAPS.contains(m)), "{maps:?}");
        }
    }

    fn stale_map(name: &'static str, from: u32, pinned: Shape, wanted: Shape) -> Stale {
        Stale {
            name,
            pinned: Layout {
                version: from,
                shape: pinned,
            },
            wanted: Layout {
                version: version_of(name),
                shape: wanted,
            },
        }
    }

    #[test]
    fn values_that_grew_migrate_only_where_a_rule_widens_them() {
        // Layout 7 widened the connection-tracking values; the converter knows the old
        // ones. Any other growth, or a map already at this version, is refused.
        for name in [DNAT_CT_MAP, DNAT_CT6_MAP, NAT_AGE_MAP, NAT_AGE6_MAP] {
            assert!(
                stale_map(name, 1, shape(8, 8), shape(16, 8)).migratable(),
                "{name}"
            );
            assert!(
                !stale_map(name, 2, shape(8, 8), shape(16, 8)).migratable(),
                "{name}"
            );
        }
        assert!(!stale_map(SNAT_MAP, 1, shape(8, 8), shape(16, 8)).migratable());
    }

    #[test]
    fn only_maps_whose_keys_and_values_kept_their_size_migrate() {
        let stale = |pinned: Shape, wanted: Shape| stale_map(DROPS_MAP, 1, pinned, wanted);
        assert!(stale(shape(16, 6), shape(16, 8)).migratable(), "more slots");
        assert!(
            stale(shape(16, 8), shape(16, 8)).migratable(),
            "new meaning"
        );
        assert!(
            !stale(shape(8, 8), shape(16, 8)).migratable(),
            "wider values"
        );
        let other_type = Shape {
            map_type: 1,
            ..shape(16, 8)
        };
        assert!(
            !stale(other_type, shape(16, 8)).migratable(),
            "another type"
        );
        let refused = DatapathError::LayoutRefused {
            name: DROPS_MAP,
            pinned: stale(shape(8, 8), shape(16, 8)).pinned.to_string(),
            wanted: shape(16, 8).to_string(),
        };
        assert!(
            refused.to_string().contains(
                "layout 1 (type 6, key 4 B, value 8 B, 8 entries), this netpath expects type 6"
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("--reload"), "{refused}");
    }
}
