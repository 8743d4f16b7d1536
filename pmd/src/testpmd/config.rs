//! The application's settings, read from the kernel command line (`key=value` words).

use core::fmt;
use core::str::FromStr;

/// Forwarding mode, as testpmd's `--forward-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward every received frame unchanged.
    Io,
    /// Forward every received frame with source and destination MAC swapped.
    MacSwap,
    /// Receive and free.
    RxOnly,
    /// Transmit `pkts` generated UDP frames of `size` bytes; receive nothing.
    TxOnly,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Io => "io",
            Mode::MacSwap => "macswap",
            Mode::RxOnly => "rxonly",
            Mode::TxOnly => "txonly",
        }
    }
}

impl FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "io" => Ok(Mode::Io),
            "macswap" => Ok(Mode::MacSwap),
            "rxonly" => Ok(Mode::RxOnly),
            "txonly" => Ok(Mode::TxOnly),
            _ => Err(()),
        }
    }
}

/// Smallest frame txonly builds: Ethernet + IPv4 + UDP headers and the 8-byte sequence
/// number.
pub const MIN_TX_SIZE: u16 = 50;
/// Largest frame txonly builds: a full 1500-byte MTU frame with a VLAN tag's room.
pub const MAX_TX_SIZE: u16 = 1518;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Frames per rx/tx burst (testpmd `--burst`).
    pub burst: u16,
    /// Rx ring size (testpmd `--rxd`).
    pub rxd: u16,
    /// Tx ring size (testpmd `--txd`).
    pub txd: u16,
    /// txonly: frames to send.
    pub pkts: u64,
    /// txonly: frame size in bytes, without FCS.
    pub size: u16,
    /// Mbufs in the pool; 0 picks enough for both rings and a few bursts.
    pub mbufs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Io,
            burst: 32,
            rxd: 256,
            txd: 256,
            pkts: 0,
            size: 64,
            mbufs: 0,
        }
    }
}

/// Why a command line was refused. Carries the offending word so the message names it.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError<'a> {
    UnknownKey(&'a str),
    BadValue {
        key: &'a str,
        value: &'a str,
        why: &'static str,
    },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(k) => write!(f, "unknown setting '{k}'"),
            ConfigError::BadValue { key, value, why } => {
                write!(f, "bad value '{value}' for '{key}': {why}")
            }
        }
    }
}

fn number<'a, T: FromStr>(key: &'a str, value: &'a str) -> Result<T, ConfigError<'a>> {
    value.parse().map_err(|_| ConfigError::BadValue {
        key,
        value,
        why: "not a number in range",
    })
}

fn ring<'a>(key: &'a str, value: &'a str) -> Result<u16, ConfigError<'a>> {
    let n: u16 = number(key, value)?;
    if n == 0 || n > 32768 || !n.is_power_of_two() {
        return Err(ConfigError::BadValue {
            key,
            value,
            why: "a ring size is a power of two from 1 to 32768",
        });
    }
    Ok(n)
}

impl Config {
    /// Parses whitespace-separated `key=value` words. Words without `=` (a boot loader's
    /// own flags) are ignored; unknown keys and bad values are errors.
    pub fn parse(cmdline: &str) -> Result<Self, ConfigError<'_>> {
        let mut c = Config::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "mode" => {
                    c.mode = value.parse().map_err(|_| ConfigError::BadValue {
                        key,
                        value,
                        why: "modes are io, macswap, rxonly, txonly",
                    })?
                }
                "burst" => {
                    c.burst = number(key, value)?;
                    if c.burst == 0 || c.burst > 512 {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "a burst is 1 to 512 frames",
                        });
                    }
                }
                "ring" => {
                    c.rxd = ring(key, value)?;
                    c.txd = c.rxd;
                }
                "rxd" => c.rxd = ring(key, value)?,
                "txd" => c.txd = ring(key, value)?,
                "pkts" => c.pkts = number(key, value)?,
                "size" => {
                    c.size = number(key, value)?;
                    if !(MIN_TX_SIZE..=MAX_TX_SIZE).contains(&c.size) {
                        return Err(ConfigError::BadValue {
                            key,
                            value,
                            why: "txonly frames are 50 to 1518 bytes",
                        });
                    }
                }
                "mbufs" => c.mbufs = number(key, value)?,
                _ => return Err(ConfigError::UnknownKey(key)),
            }
        }
        Ok(c)
    }

    /// Mbufs to allocate: what was asked, or both rings plus room for bursts in flight.
    pub fn pool_size(&self) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        u32::from(self.rxd) + u32::from(self.txd) + 4 * u32::from(self.burst) + 64
    }
}
