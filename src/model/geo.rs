//! Client locations: `[geo.NAME]` maps (CIDR labels and an mmdb database)
//! and what the `geo` and `nearest` policies make of them. Plain data;
//! `policy::geo` locates a client with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;

use super::Origin;

/// A `[geo.NAME]` table: how a client's address becomes a location.
#[derive(Debug, PartialEq, Eq)]
pub struct GeoMap {
    /// Name of the table.
    pub name: String,
    /// `nets` entries, longest prefix first (so the first match is the most
    /// specific), then by address.
    pub nets: Vec<GeoNet>,
    /// The distinct labels of `nets`, sorted; `GeoNet::label` indexes it.
    pub labels: Vec<String>,
    /// The mmdb database, when one is configured.
    pub database: Option<Arc<GeoDb>>,
    /// Where the table is defined.
    pub origin: Origin,
}

/// One `nets` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoNet {
    /// The network (host bits zero).
    pub net: IpNet,
    /// Index into `GeoMap::labels`.
    pub label: usize,
}

/// An mmdb file (MaxMind GeoIP2/GeoLite2 City or Country, DB-IP), read whole
/// at load: a reload reads it again.
pub struct GeoDb {
    /// Where it was read from.
    pub path: PathBuf,
    /// The database.
    pub reader: maxminddb::Reader<Vec<u8>>,
    /// FNV-1a of the file: a changed file changes the zone's hash.
    pub hash: u64,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("type", &self.reader.metadata().database_type)
            .field("hash", &self.hash)
            .finish()
    }
}

// Units are computed from the finite coordinates.
impl Eq for NearestPolicy {}

impl PartialEq for GeoDb {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.hash == other.hash
    }
}

impl Eq for GeoDb {}

/// Latitude and longitude in degrees (finite, checked at load).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coords {
    /// -90 to 90.
    pub lat: f64,
    /// -180 to 180.
    pub lon: f64,
}

// Coordinates are checked finite at load, so equality is reflexive.
impl Eq for Coords {}

impl Coords {
    /// The point on the unit sphere: regions are ordered by the dot
    /// product of these (the larger, the nearer), which orders them as
    /// the great-circle distance does without a trigonometric call per
    /// region and query.
    pub fn unit(self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(self, other: Coords) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().min(1.0).asin()
    }
}

/// A `map` key of a geo service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapKey {
    /// A `nets` label.
    Label(String),
    /// `country:XX`, an ISO 3166 code, upper case.
    Country(String),
    /// `continent:XX`, upper case.
    Continent(String),
    /// `*`: every other client.
    Default,
}

impl std::fmt::Display for MapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapKey::Label(l) => f.write_str(l),
            MapKey::Country(c) => write!(f, "country:{c}"),
            MapKey::Continent(c) => write!(f, "continent:{c}"),
            MapKey::Default => f.write_str("*"),
        }
    }
}

/// One location of a geo service: its key and its failover order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoEntry {
    /// The `map` key.
    pub key: MapKey,
    /// Positions in `Service::regions`, in failover order.
    pub order: Vec<usize>,
}

/// `policy = "geo"`: a location's list of regions, then failover.
#[derive(Debug, PartialEq, Eq)]
pub struct GeoPolicy {
    /// The map the client is located with.
    pub map: Arc<GeoMap>,
    /// The locations, sorted by key (labels, countries, continents, then
    /// `*`); their keys are the metrics' `location` label values.
    pub entries: Vec<GeoEntry>,
    /// Entry of each `nets` label (indexed like `GeoMap::labels`).
    pub by_label: Vec<Option<usize>>,
    /// Entry of each country code.
    pub by_country: BTreeMap<[u8; 2], usize>,
    /// Entry of each continent code.
    pub by_continent: BTreeMap<[u8; 2], usize>,
    /// Entry of `*`.
    pub default: usize,
}

/// `policy = "nearest"`: healthy regions by distance from the client.
#[derive(Debug, PartialEq)]
pub struct NearestPolicy {
    /// The map the client is located with.
    pub map: Arc<GeoMap>,
    /// How many of the nearest healthy regions to answer.
    pub answers: usize,
    /// Location of each of the service's regions (by position), as a
    /// point on the unit sphere (`Coords::unit`).
    pub units: Vec<[f64; 3]>,
    /// The same for each `nets` label that names a region of the zone with
    /// a location (indexed like `GeoMap::labels`); `None` for other labels.
    pub label_units: Vec<Option<[f64; 3]>>,
}
