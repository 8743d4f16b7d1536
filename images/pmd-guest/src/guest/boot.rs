//! PVH entry and the whole of ring 0.
//!
//! On this project's nested KVM every ring-0 instruction is emulated (about two million a
//! second), so ring 0 does only what needs privilege: load the GDT, TSS and IDT, turn on
//! long mode with page tables that are already complete in the image, and `iretq` to ring 3
//! with IOPL=3 (so ring 3 may use port I/O). No `int n`/`int3` here: they stop the VM.
//!
//! Exceptions from ring 3 enter a tiny stub that rewrites its own return frame to resume in
//! ring 3 at `guest_exception`, which reports the fault and ends the run.

use core::arch::global_asm;

/// Kernel code selector (GDT entry 1).
const KERNEL_CS: u16 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8e;
/// Exception vectors the CPU defines.
const EXCEPTIONS: usize = 32;
/// Size of one exception stub (see `.balign 16` below).
const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                      /* namesz */
    .long 4                      /* descsz */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start
    .popsection

    /* ---------------- 32-bit entry: EBX = hvm_start_info ---------------- */
    .pushsection .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    lgdt gdt_ptr
    /* The TSS base cannot be split into descriptor fields by the linker: patch it. */
    movl $tss, %eax
    movw %ax, gdt_tss + 2
    shrl $16, %eax
    movb %al, gdt_tss + 4
    movb %ah, gdt_tss + 7
    movl %cr4, %eax
    orl $0x20, %eax              /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx       /* EFER */
    rdmsr
    orl $0x100, %eax             /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax        /* PG | WP | PE */
    movl %eax, %cr0
    ljmp $0x08, $long_entry

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movw $0x28, %ax
    ltr %ax
    lidt idt_ptr
    movq $kernel_stack_top, %rsp
    movl %ebx, %edi              /* start_info: first argument of ring3_entry */
    /* x2APIC, when CPUID offers it (vlab does only with an interrupt controller). */
    movl $1, %eax
    cpuid
    testl $(1 << 21), %ecx
    jz 1f
    movl $0x1b, %ecx             /* IA32_APIC_BASE */
    rdmsr
    orl $0xc00, %eax             /* enable, x2APIC mode */
    wrmsr
    movl $0x80f, %ecx            /* spurious-interrupt vector register */
    movl $0x1ff, %eax            /* APIC software enable, spurious vector 0xff */
    xorl %edx, %edx
    wrmsr
    movb $1, apic_present
1:  pushq $0x23                  /* SS: user data, RPL 3 */
    pushq $user_stack_top        /* RSP */
    pushq $0x3202                /* RFLAGS: IOPL=3, IF=1 (kvm_pvm also wants the TSS bitmap) */
    pushq $0x1b                  /* CS: user code, RPL 3 */
    pushq $ring3_entry           /* RIP */
    iretq

    /* ---------------- exceptions (ring 0) ----------------
       Stub n pushes a dummy error code where the CPU pushes none, then n. */
    .balign 16
    .globl exception_stubs
exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\n == 8) || (\n >= 10 && \n <= 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp exception_common
    .endr

exception_common:
    popq %rdi                    /* vector */
    popq %rsi                    /* error code */
    movq (%rsp), %rdx            /* faulting RIP */
    movq %cr2, %rcx
    testq $3, 8(%rsp)            /* from ring 3? */
    jz 1f
    movq $guest_exception, %rax  /* resume in ring 3 at guest_exception(rdi, rsi, rdx, rcx) */
    movq %rax, (%rsp)
    movq $exception_stack_top - 8, %rax   /* as if `call`ed: RSP = 8 mod 16 */
    movq %rax, 24(%rsp)
    iretq
1:  movw $0xf4, %dx              /* a fault in ring 0 itself: exit code 5, CPU_EXCEPTION */
    movl $5, %eax
    outl %eax, %dx
2:  jmp 2b

    /* ---------------- interrupts (ring 0) ----------------
       Each port's configuration-change MSI (vector 0x40 + 0x20 * port) counts itself and
       is acknowledged; ring 3 polls the counts. One stub per port, each the same dozen
       instructions with its own counter. Spurious interrupts take no EOI. */
    .irp port, 0,1,2,3
    .balign 16
    .globl irq_config_\port
irq_config_\port:
    pushq %rax
    pushq %rcx
    pushq %rdx
    lock incl irq_counts + 4 * (0x40 + 0x20 * \port)
    movl $0x80b, %ecx            /* x2APIC EOI */
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
    popq %rdx
    popq %rcx
    popq %rax
    iretq
    .endr
    .balign 16
    .globl irq_spurious
irq_spurious:
    iretq
    .popsection

    /* ---------------- ring 3 entry ---------------- */
    .pushsection .text, "ax"
ring3_entry:
    movq %rdi, %rbx
    movq $__bss_start, %rdi
    movq $__bss_end, %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    movq %rbx, %rdi
    call guest_main
3:  jmp 3b
    .popsection

    /* ---------------- tables ---------------- */
    .pushsection .data, "aw"
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff     /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff     /* 0x10 kernel data */
    .quad 0x00affa000000ffff     /* 0x18 user code, 64-bit, DPL 3 */
    .quad 0x00cff2000000ffff     /* 0x20 user data, DPL 3 */
gdt_tss:
    .quad 0x0000890000002068     /* 0x28 64-bit TSS, limit 104 + 8 KiB bitmap, base patched at entry */
    .quad 0
gdt_end:
    /* Set by ring 0, so not in .bss (which ring 3 zeroes). */
    .globl apic_present
apic_present:
    .byte 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
idt_ptr:
    .word 256 * 16 - 1
    .quad idt

    .balign 16
tss:
    .long 0
    .quad kernel_stack_top       /* RSP0: the stack exceptions from ring 3 arrive on */
    .quad 0, 0, 0
    .quad 0, 0, 0, 0, 0, 0, 0    /* IST1-7 */
    .quad 0
    .word 0
    .word 104                    /* I/O permission bitmap right after */
    .fill 8192, 1, 0             /* every port allowed */
    .byte 0xff                   /* the bitmap's terminator */

    /* Identity map of the first 4 GiB with 2 MiB pages, user-accessible, built by the
       assembler so that ring 0 does not spend emulated instructions on it. */
    .pushsection .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x7
    .quad pd + 0x1000 + 0x7
    .quad pd + 0x2000 + 0x7
    .quad pd + 0x3000 + 0x7
    .fill 508, 8, 0
pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x87    /* present, writable, user, 2 MiB */
    .set page, page + 1
    .endr
    .popsection
    .popsection

    .pushsection .bss, "aw", @nobits
    .balign 4096
    .globl idt
idt:
    .skip 256 * 16
    .globl irq_counts
irq_counts:
    .skip 256 * 4
    .popsection

    .pushsection .stack, "aw", @nobits
    .balign 4096
    .skip 4096
kernel_stack_top:
    .skip 16384
exception_stack_top:
    .skip 262144
user_stack_top:
    .popsection
"#,
    options(att_syntax)
);

/// Ports with a configuration-change stub above (`irq_config_0` to `irq_config_3`).
const PORTS: usize = 4;
const _: () = assert!(PORTS == pmd::net::irq::MAX_PORTS as usize);
// `irq_config_N` above counts vector 0x40 + 0x20 * N by number: `pmd::net::config_vector`.
const _: () = {
    let mut port = 0;
    while port < PORTS {
        assert!(pmd::net::config_vector(port as u8) as usize == 0x40 + 0x20 * port);
        port += 1;
    }
};
const SPURIOUS_VECTOR: usize = 0xff;

extern "C" {
    static exception_stubs: u8;
    static irq_config_0: u8;
    static irq_config_1: u8;
    static irq_config_2: u8;
    static irq_config_3: u8;
    static irq_spurious: u8;
    static mut idt: [u64; 512];
    static irq_counts: [u32; 256];
    static apic_present: u8;
}

/// Whether ring 0 found and enabled an x2APIC.
pub fn apic_enabled() -> bool {
    // SAFETY: a byte in .data that only ring 0 writes, before ring 3 starts.
    unsafe { core::ptr::addr_of!(apic_present).read_volatile() != 0 }
}

/// Interrupts with `vector` taken so far.
pub fn interrupt_count(vector: u8) -> u32 {
    // SAFETY: the table has 256 entries; the interrupt handler updates them atomically.
    unsafe {
        core::ptr::addr_of!(irq_counts)
            .cast::<u32>()
            .add(usize::from(vector))
            .read_volatile()
    }
}

fn set_gate(v: usize, handler: u64) {
    let low = (handler & 0xffff)
        | u64::from(KERNEL_CS) << 16
        | u64::from(INTERRUPT_GATE) << 40
        | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    // SAFETY: `idt` is the 4 KiB table in .bss that `lidt` loaded; vector `v < 256` has
    // its two quadwords at 2v and 2v + 1. Only `fill_idt` writes it, once, before any
    // interrupt is possible.
    unsafe {
        let p = core::ptr::addr_of_mut!(idt).cast::<u64>();
        p.add(2 * v).write_volatile(low);
        p.add(2 * v + 1).write_volatile(high);
    }
}

/// Points the 32 exception vectors at their stubs and the interrupt vectors at their
/// handlers. Done here in ring 3 (the IDT page is user-writable) because each of these
/// stores would cost an emulated instruction in ring 0. Interrupts are enabled in ring 3's
/// RFLAGS, but none can arrive before the driver programs a vector.
pub fn fill_idt() {
    let base = core::ptr::addr_of!(exception_stubs) as u64;
    for v in 0..EXCEPTIONS {
        set_gate(v, base + v as u64 * STUB_SIZE);
    }
    let config_stubs = [
        core::ptr::addr_of!(irq_config_0),
        core::ptr::addr_of!(irq_config_1),
        core::ptr::addr_of!(irq_config_2),
        core::ptr::addr_of!(irq_config_3),
    ];
    for (port, stub) in config_stubs.into_iter().enumerate() {
        let vector = pmd::net::config_vector(port as u8);
        set_gate(usize::from(vector), stub as u64);
    }
    set_gate(SPURIOUS_VECTOR, core::ptr::addr_of!(irq_spurious) as u64);
}
