//! MSI-X table and pending-bit array emulation (PCI Local Bus 3.0, 6.8.2).

use crate::virtio::MsiMessage;

const ENTRY_SIZE: u64 = 16;
const CTRL_MASKED: u32 = 1;

#[derive(Clone, Copy, Default)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

/// The vectors of one function. Accesses are 4 or 8 bytes, aligned; anything else is
/// ignored (reads as zero), as hardware may do.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    /// `n` vectors, all masked, as after reset.
    pub fn new(n: u16) -> Self {
        Self {
            entries: vec![
                Entry {
                    ctrl: CTRL_MASKED,
                    ..Entry::default()
                };
                usize::from(n)
            ],
            pending: vec![false; usize::from(n)],
            enabled: false,
            function_masked: false,
        }
    }

    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Table size in bytes.
    pub fn table_bytes(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    fn message(&self, v: usize) -> MsiMessage {
        let e = &self.entries[v];
        MsiMessage {
            addr: u64::from(e.addr_hi) << 32 | u64::from(e.addr_lo),
            data: e.data,
        }
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled && !self.function_masked && self.entries[v].ctrl & CTRL_MASKED == 0
    }

    /// Messages of pending vectors that just became deliverable.
    fn flush_pending(&mut self) -> Vec<MsiMessage> {
        let mut out = Vec::new();
        for v in 0..self.entries.len() {
            if self.pending[v] && self.deliverable(v) {
                self.pending[v] = false;
                out.push(self.message(v));
            }
        }
        out
    }

    /// Applies the Message Control bits written to the capability; returns messages that
    /// became deliverable.
    pub fn set_control(&mut self, enabled: bool, function_masked: bool) -> Vec<MsiMessage> {
        self.enabled = enabled;
        self.function_masked = function_masked;
        self.flush_pending()
    }

    /// Signals `vector`: its message when deliverable, otherwise it is left pending (or
    /// dropped when MSI-X is off or the vector does not exist).
    pub fn trigger(&mut self, vector: u16) -> Option<MsiMessage> {
        let v = usize::from(vector);
        if v >= self.entries.len() || !self.enabled {
            return None;
        }
        if self.deliverable(v) {
            Some(self.message(v))
        } else {
            self.pending[v] = true;
            None
        }
    }

    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((v, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let e = &self.entries[v];
        let words = [e.addr_lo, e.addr_hi, e.data, e.ctrl];
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&words[field + i].to_le_bytes());
        }
    }

    /// Returns messages that became deliverable (a pending vector unmasked).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Vec<MsiMessage> {
        let Some((v, field)) = self.locate(offset, data.len()) else {
            return Vec::new();
        };
        for (i, chunk) in data.chunks(4).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let e = &mut self.entries[v];
            match field + i {
                0 => e.addr_lo = value & !3,
                1 => e.addr_hi = value,
                2 => e.data = value,
                _ => e.ctrl = value & CTRL_MASKED,
            }
        }
        self.flush_pending()
    }

    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (i, b) in data.iter_mut().enumerate() {
            for bit in 0..8 {
                let v = (offset as usize + i) * 8 + bit;
                if self.pending.get(v).copied().unwrap_or(false) {
                    *b |= 1 << bit;
                }
            }
        }
    }

    /// Entry and dword index of an aligned 4- or 8-byte access inside the table.
    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let ok = (len == 4 && offset % 4 == 0) || (len == 8 && offset % 8 == 0);
        let v = usize::try_from(offset / ENTRY_SIZE).ok()?;
        (ok && v < self.entries.len()).then_some((v, (offset % ENTRY_SIZE) as usize / 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(m: &mut Msix, v: u64, addr: u32, data: u32) {
        m.write_table(v * 16, &addr.to_le_bytes());
        m.write_table(v * 16 + 8, &data.to_le_bytes());
    }

    #[test]
    fn masked_vectors_stay_pending_until_unmasked() {
        let mut m = Msix::new(3);
        m.set_control(true, false);
        program(&mut m, 1, 0xfee0_0000, 0x41);
        assert_eq!(m.trigger(1), None, "entries start masked");
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        let sent = m.write_table(16 + 12, &0u32.to_le_bytes());
        assert_eq!(
            sent,
            vec![MsiMessage {
                addr: 0xfee0_0000,
                data: 0x41
            }]
        );
        assert_eq!(m.trigger(1).map(|x| x.data), Some(0x41));
    }

    #[test]
    fn bad_accesses_are_ignored() {
        let mut m = Msix::new(2);
        assert!(m.write_table(2, &[1, 2, 3, 4]).is_empty());
        assert!(m.write_table(64, &[1, 2, 3, 4]).is_empty());
        assert!(m.write_table(0, &[1, 2]).is_empty());
        let mut d = [0xffu8; 4];
        m.read_table(1000, &mut d);
        assert_eq!(d, [0; 4]);
        assert_eq!(m.trigger(7), None);
    }
}
