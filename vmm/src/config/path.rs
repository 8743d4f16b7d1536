//! The driver's and device's datapath for a run, as DPDK's PMD picks one of its rx/tx
//! paths from the negotiated features: split or packed ring, in-order or not, mergeable rx
//! buffers or not. Each is separate code on both sides, so the suites run every case on
//! every path that applies to it.

use std::fmt;

use serde::Deserialize;

use super::args::{DeviceArgs, GuestArgs, Transport};
use super::Mode;

/// One datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingPath {
    pub packed: bool,
    pub in_order: bool,
    pub mergeable: bool,
}

impl RingPath {
    /// Every path, the one a driver prefers first (what it asks for when everything is
    /// offered: packed, in order, mergeable).
    pub const ALL: [RingPath; 8] = [
        RingPath::new(true, true, true),
        RingPath::new(true, true, false),
        RingPath::new(true, false, true),
        RingPath::new(true, false, false),
        RingPath::new(false, true, true),
        RingPath::new(false, true, false),
        RingPath::new(false, false, true),
        RingPath::new(false, false, false),
    ];

    pub const fn new(packed: bool, in_order: bool, mergeable: bool) -> Self {
        Self {
            packed,
            in_order,
            mergeable,
        }
    }

    /// `split-mrg`, `packed-inorder-nomrg`, ...
    pub fn name(self) -> String {
        format!(
            "{}{}-{}",
            if self.packed { "packed" } else { "split" },
            if self.in_order { "-inorder" } else { "" },
            if self.mergeable { "mrg" } else { "nomrg" }
        )
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let known: Vec<String> = Self::ALL.iter().map(|p| p.name()).collect();
                format!("unknown path '{s}' (known: {})", known.join(", "))
            })
    }

    /// The guest settings that ask for this path.
    pub fn apply(self, guest: &mut GuestArgs) {
        guest.packed = Some(self.packed);
        guest.in_order = Some(self.in_order);
        guest.mrg = Some(self.mergeable);
    }

    /// Whether a case with these settings can run on this path on `transport`: the legacy
    /// transport has neither packed rings nor in-order (its feature bits are 32), a setting the case fixes (the guest's or a feature
    /// the device withholds) rules out the paths that contradict it, and the hostile
    /// driver writes split rings on purpose.
    pub fn applies(
        self,
        mode: Mode,
        guest: &GuestArgs,
        device: &DeviceArgs,
        transport: Transport,
    ) -> bool {
        let withheld = |name: &str| device.withhold.iter().any(|w| w == name);
        let fixed = |setting: Option<bool>, value: bool| setting.is_none_or(|s| s == value);
        let possible = |offered: bool, value: bool| offered || !value;
        fixed(guest.packed, self.packed)
            && fixed(guest.in_order, self.in_order)
            && fixed(guest.mrg, self.mergeable)
            && possible(!withheld("ring_packed"), self.packed)
            && possible(!withheld("in_order"), self.in_order)
            && possible(!withheld("mrg_rxbuf"), self.mergeable)
            // Legacy drivers see 32 feature bits: no RING_PACKED (34), no IN_ORDER (35).
            && possible(transport == Transport::Modern, self.packed || self.in_order)
            && possible(mode != Mode::Hostile, self.packed || self.in_order)
    }
}

impl fmt::Display for RingPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for RingPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RingPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(mode: Mode, guest: &GuestArgs, device: &DeviceArgs, t: Transport) -> Vec<String> {
        RingPath::ALL
            .into_iter()
            .filter(|p| p.applies(mode, guest, device, t))
            .map(RingPath::name)
            .collect()
    }

    #[test]
    fn every_path_has_a_name_that_parses_back() {
        for p in RingPath::ALL {
            assert_eq!(RingPath::parse(&p.name()), Ok(p));
        }
        assert_eq!(RingPath::ALL[0].name(), "packed-inorder-mrg");
        assert_eq!(RingPath::ALL[7].name(), "split-nomrg");
        assert!(RingPath::parse("ring")
            .unwrap_err()
            .starts_with("unknown path 'ring' (known: packed-inorder-mrg, "));
    }

    #[test]
    fn a_case_runs_on_the_paths_its_settings_allow() {
        let (g, d) = (GuestArgs::default(), DeviceArgs::default());
        assert_eq!(names(Mode::Io, &g, &d, Transport::Modern).len(), 8);
        assert_eq!(
            names(Mode::Io, &g, &d, Transport::Legacy),
            ["split-mrg", "split-nomrg"]
        );
        let no_mrg = GuestArgs {
            mrg: Some(false),
            ..GuestArgs::default()
        };
        assert_eq!(
            names(Mode::Io, &no_mrg, &d, Transport::Modern),
            [
                "packed-inorder-nomrg",
                "packed-nomrg",
                "split-inorder-nomrg",
                "split-nomrg"
            ]
        );
        assert_eq!(
            names(Mode::Io, &no_mrg, &d, Transport::Legacy),
            ["split-nomrg"]
        );
        let withheld = DeviceArgs {
            withhold: vec!["ring_packed".into(), "in_order".into()],
            ..DeviceArgs::default()
        };
        assert_eq!(
            names(Mode::Io, &g, &withheld, Transport::Modern),
            ["split-mrg", "split-nomrg"]
        );
        assert_eq!(
            names(Mode::Hostile, &g, &d, Transport::Modern),
            ["split-mrg", "split-nomrg"]
        );
    }
}
