//! The KVM machine: one vCPU booting a PVH guest image on the board.
//!
//! Port and MMIO exits go to the board's bus; queue notifications never exit to userspace,
//! they are ioeventfds on the notify slots. There is no interrupt controller: the guests
//! here poll, and without one KVM never sleeps in HLT (a halted guest is an error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use device_model::virtio::{MsiMessage, MsiSink};
use kvm_bindings::{kvm_msi, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::{pin, supervise, Error as MachineError};
use crate::board::bus::{Bus, PioEffect};
use crate::board::Board;
use crate::machine::boot::{self, Entry};

/// CPUID leaf 1: ECX bit 21 (x2APIC), EDX bit 9 (on-chip APIC).
const CPUID_X2APIC: u32 = 1 << 21;
const CPUID_APIC: u32 = 1 << 9;

/// Real-time signal that kicks the vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open {path}: {source} (the KVM machine needs it; --machine inprocess runs without)"
    )]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM {what}: {source}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("guest stopped: {what} at RIP {rip:#x}")]
    Guest { what: String, rip: u64 },
    #[error("KVM_RUN failed at RIP {rip:#x}: {source}")]
    Run {
        rip: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("stopped on request at RIP {rip:#x} (CS {cs:#x}, CR0 {cr0:#x}, EFER {efer:#x})")]
    Stopped {
        rip: u64,
        cs: u16,
        cr0: u64,
        efer: u64,
    },
}

fn ioctl(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |source| Error::Ioctl { what, source }
}

/// A KVM VM before it has a board: created first so that the board's interrupt sink can
/// be the VM itself.
pub struct KvmVm {
    kvm: Kvm,
    vm: Arc<VmFd>,
    irqchip: bool,
}

/// MSI delivery through KVM_SIGNAL_MSI into the in-kernel local APIC.
struct KvmMsi {
    vm: Arc<VmFd>,
}

impl MsiSink for KvmMsi {
    fn send(&self, msg: MsiMessage) {
        let m = kvm_msi {
            address_lo: msg.addr as u32,
            address_hi: (msg.addr >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        if let Err(e) = self.vm.signal_msi(m) {
            tracing::warn!("KVM_SIGNAL_MSI {msg:?}: {e}");
        }
    }
}

impl KvmVm {
    /// Opens `kvm_device` and creates a VM; with `irqchip`, an in-kernel interrupt
    /// controller too (it costs milliseconds, so only runs that take interrupts have one).
    pub fn new(kvm_device: &std::path::Path, irqchip: bool) -> Result<Self, Error> {
        let open_err = |source| Error::Open {
            path: kvm_device.to_owned(),
            source,
        };
        let c_path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            kvm_device.as_os_str(),
        ))
        .map_err(|_| open_err(kvm_ioctls::Error::new(libc::EINVAL)))?;
        let kvm = Kvm::new_with_path(&c_path).map_err(open_err)?;
        let vm = kvm.create_vm().map_err(ioctl("create VM"))?;
        if irqchip {
            vm.create_irq_chip()
                .map_err(ioctl("create the in-kernel irqchip"))?;
        }
        Ok(Self {
            kvm,
            vm: Arc::new(vm),
            irqchip,
        })
    }

    /// Where the board's MSI messages go: the VM's local APIC, or nowhere without one.
    pub fn msi_sink(&self) -> Arc<dyn MsiSink> {
        if self.irqchip {
            Arc::new(KvmMsi {
                vm: self.vm.clone(),
            })
        } else {
            Arc::new(crate::board::MsiCounter::default())
        }
    }

    /// Runs `image` with `cmdline` on a vCPU against `board` until the guest writes the
    /// exit port. Returns the exit code.
    pub fn run(
        self,
        board: &Board,
        image: &std::path::Path,
        cmdline: &str,
        timeout: Duration,
        guest_cpu: Option<usize>,
    ) -> Result<u32, MachineError> {
        let vm = &self.vm;
        map_memory(vm, board)?;
        let entry = boot::load_pvh(&board.mem, board.ram, image, cmdline).map_err(Error::Boot)?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl("create vCPU"))?;
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("get supported CPUID"))?;
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                if self.irqchip {
                    e.ecx |= CPUID_X2APIC;
                } else {
                    // No local APIC without the irqchip: say so, and the guest leaves it
                    // alone (its ring 0 enables x2APIC only when CPUID offers it).
                    e.ecx &= !CPUID_X2APIC;
                    e.edx &= !CPUID_APIC;
                }
            }
        }
        vcpu.set_cpuid2(&cpuid).map_err(ioctl("set CPUID"))?;
        set_pvh_registers(&vcpu, entry)?;
        let mut ioevents = IoEvents::default();
        ioevents.sync(vm, board)?;
        // The routes the firmware set up are registered now; only a guest moving a BAR makes
        // them change again (each KVM_IOEVENTFD costs an SRCU grace period: milliseconds).
        board.bus.pci().take_routes_changed();

        register_signal_handler(kick_signal(), kick_handler).map_err(Error::Signal)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread_board = BoardRefs {
            bus: board.bus.clone(),
            nets: board.nets.iter().map(|n| n.function.clone()).collect(),
        };
        let thread_vm = self.vm.clone();
        let thread = std::thread::Builder::new()
            .name("vlab-vcpu0".into())
            .spawn(move || {
                pin(guest_cpu);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    vcpu_loop(vcpu, &thread_vm, &thread_board, &mut ioevents, &thread_stop)
                }));
                let r = match r {
                    Ok(r) => r.map_err(MachineError::from),
                    Err(p) => Err(MachineError::DriverPanicked(device_model::panic::message(
                        &*p,
                    ))),
                };
                let _ = tx.send(r);
            })
            .map_err(|e| MachineError::DriverPanicked(format!("spawning the vCPU thread: {e}")))?;
        let r = supervise(&rx, &super::port_stats(board), timeout, || {
            stop.store(true, Ordering::Release);
            let _ = thread.kill(kick_signal());
        });
        if !matches!(r, Err(MachineError::Unresponsive(_))) {
            let _ = thread.join();
        }
        r
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

/// What the vCPU thread needs from the board.
struct BoardRefs {
    bus: Arc<Bus>,
    nets: Vec<Arc<std::sync::Mutex<crate::board::NetFunction>>>,
}

fn map_memory(vm: &VmFd, board: &Board) -> Result<(), Error> {
    for (slot, region) in board.mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by the board's
        // `GuestMemoryMmap`, which outlives the VM (the caller keeps the board until the run
        // has ended and the VM fd is dropped).
        unsafe { vm.set_user_memory_region(r) }.map_err(ioctl("map guest memory"))?;
    }
    Ok(())
}

/// The PVH entry state: 32-bit protected mode, flat segments, paging off, EBX = start_info.
fn set_pvh_registers(vcpu: &VcpuFd, entry: Entry) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl("get sregs"))?;
    let flat = |selector: u16, type_: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0x08, 0xb);
    let data = flat(0x10, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(ioctl("set sregs"))?;
    let mut regs = vcpu.get_regs().map_err(ioctl("get regs"))?;
    regs.rip = entry.rip;
    regs.rbx = entry.start_info;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(ioctl("set regs"))?;
    Ok(())
}

/// The ioeventfds registered for the virtio queues' notify slots.
#[derive(Default)]
struct IoEvents {
    registered: Vec<(u64, EventFd)>,
}

impl IoEvents {
    /// Makes the registrations match the notify slots' current addresses.
    fn sync(&mut self, vm: &VmFd, board: &Board) -> Result<(), Error> {
        let nets: Vec<_> = board.nets.iter().map(|n| n.function.clone()).collect();
        self.sync_with(vm, &nets)
    }

    /// Every port's notify slots: each function's queues have their own addresses.
    fn sync_with(
        &mut self,
        vm: &VmFd,
        nets: &[Arc<std::sync::Mutex<crate::board::NetFunction>>],
    ) -> Result<(), Error> {
        for (addr, evt) in self.registered.drain(..) {
            vm.unregister_ioevent(&evt, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(ioctl("unregister ioeventfd"))?;
        }
        for net in nets {
            self.register(vm, net)?;
        }
        Ok(())
    }

    fn register(
        &mut self,
        vm: &VmFd,
        net: &std::sync::Mutex<crate::board::NetFunction>,
    ) -> Result<(), Error> {
        let net = net.lock().unwrap_or_else(|e| e.into_inner());
        for (addr, evt) in net.notifiers() {
            let evt = evt.try_clone().map_err(|e| {
                ioctl("clone ioeventfd")(kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(0)))
            })?;
            vm.register_ioevent(&evt, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(ioctl("register ioeventfd"))?;
            self.registered.push((addr, evt));
        }
        Ok(())
    }
}

/// What ended a `KVM_RUN`, with the borrow of the vCPU's run area released.
enum Step {
    Continue,
    PciConfigWrite,
    Exit(u32),
    Stop(String),
}

fn vcpu_loop(
    mut vcpu: VcpuFd,
    vm: &VmFd,
    board: &BoardRefs,
    ioevents: &mut IoEvents,
    stop: &AtomicBool,
) -> Result<u32, Error> {
    loop {
        if stop.load(Ordering::Acquire) {
            let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
            let (cs, cr0, efer) = vcpu
                .get_sregs()
                .map(|s| (s.cs.selector, s.cr0, s.efer))
                .unwrap_or_default();
            return Err(Error::Stopped { rip, cs, cr0, efer });
        }
        let step = match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    tracing::trace!("exit: in {port:#x} ({} bytes)", data.len());
                    board.bus.pio_read(port, data);
                    Step::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    tracing::trace!("exit: out {port:#x} ({} bytes)", data.len());
                    match board.bus.pio_write(port, data) {
                        PioEffect::Exit(code) => Step::Exit(code),
                        PioEffect::Continue if (0xcf8..=0xcff).contains(&port) => {
                            Step::PciConfigWrite
                        }
                        PioEffect::Continue => Step::Continue,
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    tracing::trace!("exit: mmio read {addr:#x} ({} bytes)", data.len());
                    board.bus.mmio_read(addr, data);
                    Step::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    tracing::trace!("exit: mmio write {addr:#x} ({} bytes)", data.len());
                    board.bus.mmio_write(addr, data);
                    Step::Continue
                }
                VcpuExit::Hlt => Step::Stop("HLT with no interrupt controller to wake it".into()),
                VcpuExit::Shutdown => Step::Stop("triple fault (KVM_EXIT_SHUTDOWN)".into()),
                VcpuExit::InternalError => {
                    Step::Stop("KVM internal error (instruction emulation failed)".into())
                }
                VcpuExit::FailEntry(reason, cpu) => Step::Stop(format!(
                    "VM entry failed (hardware reason {reason:#x}, cpu {cpu})"
                )),
                other => Step::Stop(format!("unexpected exit {other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Continue,
            Err(source) => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                return Err(Error::Run { rip, source });
            }
        };
        match step {
            Step::Continue => {}
            Step::PciConfigWrite => {
                if board.bus.pci().take_routes_changed() {
                    ioevents.sync_with(vm, &board.nets)?;
                }
            }
            Step::Exit(code) => return Ok(code),
            Step::Stop(what) => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                return Err(Error::Guest { what, rip });
            }
        }
    }
}
