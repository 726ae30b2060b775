//! The seccomp-BPF filter: the last layer installed before `execve` of the untrusted command.
//!
//! This module is pure: it builds a classic-BPF program as `Vec<libc::sock_filter>` and performs
//! no syscalls and contains no `unsafe`. The caller installs it with
//! `seccomp(SECCOMP_SET_MODE_FILTER, ...)` after `PR_SET_NO_NEW_PRIVS`.
//!
//! # What the filter guarantees
//!
//! Rules are evaluated in this order (the first that matches decides):
//!
//! 1. **Foreign ABI.** A syscall whose `seccomp_data.arch` is not the build architecture
//!    (`AUDIT_ARCH_X86_64` or `AUDIT_ARCH_AARCH64`) kills the whole process
//!    (`SECCOMP_RET_KILL_PROCESS`). Syscall numbers differ per ABI, so a deny list written for
//!    one ABI means nothing for another: `int 0x80` (i386) on x86_64 would otherwise bypass it.
//! 2. **x32 ABI (x86_64 only).** x32 syscalls arrive with the x86_64 audit arch and
//!    `nr | __X32_SYSCALL_BIT` (`0x4000_0000`), so they would slip past every `nr == N` check.
//!    Any `nr >= 0x4000_0000` gets `EPERM` (the syscall never runs; `EPERM` is the filter's one
//!    "denied by policy" errno, see below). This also covers negative numbers such as `-1`.
//! 3. **Denied outright** with `EPERM`: kernel-attack-surface and host-state syscalls an agent has
//!    no business making — debugging other processes (`ptrace`, `process_vm_*`, `pidfd_getfd`,
//!    `kcmp`, `process_madvise`), eBPF and perf, `userfaultfd` (a classic exploit primitive),
//!    the kernel keyring, io_uring (bypasses seccomp for the operations it performs), kexec and
//!    modules, every mount API (old and new), `chroot`/`pivot_root`, swap, reboot, accounting,
//!    clock setting, file handles (`open_by_handle_at` escapes bind mounts), quotas, `vhangup`,
//!    `fanotify_init`, `syslog`, and on x86_64 `iopl`/`ioperm`/`modify_ldt`/`uselib`/`_sysctl`.
//!    `unshare` and `setns` are denied unless [`FilterOptions::allow_nested_userns`].
//! 4. **`clone3` returns `ENOSYS`**, always. Its flags live in a user-memory struct that seccomp
//!    cannot read; `ENOSYS` makes glibc (>= 2.34) and other runtimes fall back to `clone`, whose
//!    flags are a register the filter can inspect.
//! 5. **`clone`** with any namespace flag (`CLONE_NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS|
//!    NEWCGROUP|NEWTIME`) in the low 32 bits of `args[0]` gets `EPERM`, unless
//!    [`FilterOptions::allow_nested_userns`]. Plain `fork` and thread creation are allowed. Only
//!    the low 32 bits are checked because the kernel truncates the flags of legacy `clone` to 32
//!    bits.
//! 6. **`personality`** is allowed only for `0` (`PER_LINUX`) and `0xffffffff` (query); anything
//!    else gets `EPERM`. In particular `ADDR_NO_RANDOMIZE` (disables ASLR for the next `execve`)
//!    and `READ_IMPLIES_EXEC` are refused.
//! 7. **`ioctl`** with request `TIOCSTI` (inject input into the controlling terminal, which may be
//!    the user's shell) or `TIOCLINUX` gets `EPERM`. Only the low 32 bits of `args[1]` are
//!    compared, because the kernel truncates the request to `unsigned int`: comparing all 64 bits
//!    is the 2019 bypass (`0xdeadbeef_00005412` reached the kernel as `TIOCSTI`).
//! 8. **`socket` and `socketpair`** get `EPERM` for `AF_PACKET` and `AF_VSOCK` (raw link-layer
//!    access, host/VM channels); for `AF_NETLINK` with any protocol other than `NETLINK_ROUTE`
//!    (audit, netfilter, uevents, crypto, ... are kernel attack surface); and, for every domain
//!    except `AF_NETLINK`, for type `SOCK_RAW` or `SOCK_PACKET` (the type is masked with `0xf`
//!    to strip `SOCK_NONBLOCK`/`SOCK_CLOEXEC`). `AF_NETLINK` + `NETLINK_ROUTE` is allowed with
//!    any type because netlink treats `SOCK_RAW` and `SOCK_DGRAM` the same and `iproute2`,
//!    `getifaddrs(3)` and resolvers use `SOCK_RAW`; the `SOCK_RAW` ban targets raw IP packets.
//!    Ping sockets (`AF_INET`, `SOCK_DGRAM`, `IPPROTO_ICMP`) stay allowed.
//! 9. Everything else is allowed (`SECCOMP_RET_ALLOW`): this is a deny-list filter, the other
//!    layers (namespaces, Landlock, egress proxy) carry the rest of the policy.
//!
//! Errno choice: every denial is `EPERM` ("operation not permitted", what a program sees when it
//! lacks a capability, so it usually degrades gracefully), except `clone3` (`ENOSYS`, to trigger
//! the libc fallback). Only the foreign-ABI rule kills.
//!
//! # What it trusts
//!
//! The `libc::SYS_*` constants of the build target and the kernel ABI layout of
//! `struct seccomp_data` (checked by a unit test). The program is only correct for the
//! architecture it was compiled for, which is also the only architecture it accepts.

use core::mem::{offset_of, size_of};

#[cfg(not(any(
    all(target_arch = "x86_64", target_endian = "little"),
    all(target_arch = "aarch64", target_endian = "little")
)))]
compile_error!("warden's seccomp filter supports only little-endian x86_64 and aarch64");

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

/// `__X32_SYSCALL_BIT`: set in `nr` for x32-ABI syscalls, which carry the x86_64 audit arch.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
/// aarch64 has no second ABI sharing its audit arch (ILP32 was never merged upstream).
#[cfg(target_arch = "aarch64")]
const X32_SYSCALL_BIT: Option<u32> = None;

/// `kexec_file_load` (asm-generic number on aarch64; the musl flavour of `libc` lacks it there).
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;

/// `open_tree_attr` (Linux 6.15): `open_tree` plus mount attributes. Syscalls numbered from 424
/// on share one number on every architecture; `libc` does not define this one yet.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// `SOCK_PACKET` (obsolete link-layer socket type); not defined by `libc` for glibc targets.
const SOCK_PACKET: u32 = 10;
/// `SOCK_TYPE_MASK`: the socket type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: u32 = 0xf;
/// `NETLINK_ROUTE`, the only netlink protocol allowed.
const NETLINK_ROUTE: u32 = 0;

/// `personality(0xffffffff)` queries the current persona without changing it.
const PERSONALITY_QUERY: u32 = 0xffff_ffff;
/// `PER_LINUX`, the default persona.
const PER_LINUX: u32 = 0;

/// Every `clone` flag that creates a namespace.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    // For legacy clone this bit lies in CSIGNAL (the exit signal) and cannot create a time
    // namespace; it is kept so the mask is complete. Exit signals >= 128 are invalid anyway.
    | libc::CLONE_NEWTIME) as u32;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_EPERM: u32 = errno_action(libc::EPERM);
const RET_ENOSYS: u32 = errno_action(libc::ENOSYS);

const fn errno_action(errno: libc::c_int) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// Syscalls denied with `EPERM` on every supported architecture.
const DENIED_EVERYWHERE: &[(&str, libc::c_long)] = &[
    // Inspecting or manipulating other processes.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("process_madvise", libc::SYS_process_madvise),
    ("kcmp", libc::SYS_kcmp),
    // Large kernel attack surface, exploit primitives.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    // Kernel code loading and machine state.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", SYS_KEXEC_FILE_LOAD),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    // Clocks are host-global.
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    // The filesystem view is fixed by the sandbox: no mounts, no root changes.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("open_tree_attr", SYS_OPEN_TREE_ATTR),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // File handles bypass path-based confinement (the "shocker" container escape).
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
];

/// Legacy x86 syscalls: I/O port access, LDT games, `uselib`, `_sysctl`.
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH_SPECIFIC: &[(&str, libc::c_long)] = &[
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("uselib", libc::SYS_uselib),
    ("_sysctl", libc::SYS__sysctl),
];
#[cfg(target_arch = "aarch64")]
const DENIED_ARCH_SPECIFIC: &[(&str, libc::c_long)] = &[];

/// Namespace entry points, denied unless [`FilterOptions::allow_nested_userns`].
const DENIED_UNLESS_NESTED_USERNS: &[(&str, libc::c_long)] =
    &[("unshare", libc::SYS_unshare), ("setns", libc::SYS_setns)];

/// Options for [`build_filter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Allow `unshare`, `setns` and `clone` with namespace flags, so the sandboxed command can
    /// itself build namespaces (e.g. run a nested sandbox). Off by default.
    pub allow_nested_userns: bool,
    /// Deny `socket(AF_INET | AF_INET6, ...)`: the network layer of the degraded mode, when no
    /// network namespace can be made (Landlock's TCP rules do not cover UDP).
    pub deny_inet_sockets: bool,
    /// Deny `socket(AF_UNIX, ...)` (`socketpair` stays allowed): without a mount namespace,
    /// host daemon sockets such as docker's cannot be hidden, so nothing may connect to them.
    pub deny_unix_sockets: bool,
}

/// What the filter does with one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Always deny with `EPERM`.
    Eperm,
    /// Always deny with `ENOSYS` (`clone3`).
    Enosys,
    /// Deny `clone` when it asks for a namespace.
    CloneFlags,
    /// Allow only the default persona and the query.
    Personality,
    /// Deny terminal-injection ioctls.
    Ioctl,
    /// Deny raw, packet, vsock and non-route netlink sockets.
    Socket,
    /// As `Socket`, and also the domains the degraded mode takes away.
    SocketStrict,
}

impl Check {
    fn describe(self) -> &'static str {
        match self {
            Check::Eperm => "denied (EPERM)",
            Check::Enosys => "denied (ENOSYS), so libc falls back to clone(2), whose flags the filter can inspect",
            Check::CloneFlags => "denied (EPERM) when flags request a new namespace (CLONE_NEW*)",
            Check::Personality => "denied (EPERM) unless the persona is 0 (PER_LINUX) or 0xffffffff (query)",
            Check::Ioctl => "denied (EPERM) for TIOCSTI and TIOCLINUX (low 32 bits of the request)",
            Check::Socket => {
                "denied (EPERM) for AF_PACKET, AF_VSOCK, AF_NETLINK other than NETLINK_ROUTE, \
                 and SOCK_RAW/SOCK_PACKET outside AF_NETLINK"
            }
            Check::SocketStrict => {
                "denied (EPERM) as socketpair, and for the domains the degraded mode takes away \
                 (AF_INET/AF_INET6 without a network namespace, AF_UNIX without a mount namespace)"
            }
        }
    }
}

/// One syscall the filter does not simply allow.
#[derive(Debug, Clone, Copy)]
struct Rule {
    name: &'static str,
    nr: u32,
    check: Check,
}

/// The single source of truth for both [`build_filter`] and [`denied_syscalls`].
fn rules(opts: &FilterOptions) -> Vec<Rule> {
    let rule = |name, nr: libc::c_long, check| Rule {
        name,
        nr: u32::try_from(nr).expect("syscall numbers are small and non-negative"),
        check,
    };
    let mut rules = Vec::new();
    rules.push(rule("clone3", libc::SYS_clone3, Check::Enosys));
    for &(name, nr) in DENIED_EVERYWHERE.iter().chain(DENIED_ARCH_SPECIFIC) {
        rules.push(rule(name, nr, Check::Eperm));
    }
    if !opts.allow_nested_userns {
        for &(name, nr) in DENIED_UNLESS_NESTED_USERNS {
            rules.push(rule(name, nr, Check::Eperm));
        }
        rules.push(rule("clone", libc::SYS_clone, Check::CloneFlags));
    }
    rules.push(rule("personality", libc::SYS_personality, Check::Personality));
    rules.push(rule("ioctl", libc::SYS_ioctl, Check::Ioctl));
    let strict = opts.deny_inet_sockets || opts.deny_unix_sockets;
    rules.push(rule("socket", libc::SYS_socket, if strict { Check::SocketStrict } else { Check::Socket }));
    rules.push(rule("socketpair", libc::SYS_socketpair, Check::Socket));
    rules
}

/// What the filter decides for every syscall it does not simply allow, for `warden explain` and
/// `-v`: `(syscall name, action description)` pairs, in filter order. Syscalls not listed are
/// allowed. Foreign-ABI syscalls (killed) and x32 syscalls (`EPERM`) are not listed by name.
pub fn denied_syscalls(opts: &FilterOptions) -> Vec<(&'static str, &'static str)> {
    rules(opts).into_iter().map(|r| (r.name, r.check.describe())).collect()
}

/// Builds the seccomp-BPF program for the build architecture (see the module docs for the rules).
///
/// The program is deterministic for given options and always shorter than `BPF_MAXINSNS`; the
/// internal assembler panics on an out-of-range jump, which the unit tests rule out for every
/// option combination.
pub fn build_filter(opts: &FilterOptions) -> Vec<libc::sock_filter> {
    let rules = rules(opts);
    let mut a = Asm::default();
    let kill = a.label();
    let eperm = a.label();
    let enosys = a.label();
    let allow = a.label();
    let clone_block = a.label();
    let personality_block = a.label();
    let ioctl_block = a.label();
    let socket_block = a.label();
    let socket_strict_block = a.label();
    let netlink_block = a.label();

    // Rule 1: foreign ABI.
    a.load(SeccompField::Arch);
    a.jeq(AUDIT_ARCH_NATIVE, Next, To(kill));

    // Rule 2: x32 ABI.
    a.load(SeccompField::Nr);
    if let Some(x32_bit) = X32_SYSCALL_BIT {
        a.jge(x32_bit, To(eperm), Next);
    }

    // Rules 3-8: dispatch on the syscall number (a linear JEQ chain).
    let mut used = Vec::new();
    for rule in &rules {
        let target = match rule.check {
            Check::Eperm => eperm,
            Check::Enosys => enosys,
            Check::CloneFlags => clone_block,
            Check::Personality => personality_block,
            Check::Ioctl => ioctl_block,
            Check::Socket => socket_block,
            Check::SocketStrict => socket_strict_block,
        };
        if !used.contains(&rule.check) {
            used.push(rule.check);
        }
        a.jeq(rule.nr, To(target), Next);
    }
    // Rule 9: everything else.
    a.ret(RET_ALLOW);

    // Argument checks, each a short block that jumps forward to the shared returns below.
    if used.contains(&Check::CloneFlags) {
        a.bind(clone_block);
        a.load(SeccompField::ArgLow(0));
        a.jset(CLONE_NAMESPACE_FLAGS, To(eperm), To(allow));
    }

    if used.contains(&Check::Personality) {
        a.bind(personality_block);
        a.load(SeccompField::ArgLow(0));
        a.jeq(PER_LINUX, To(allow), Next);
        a.jeq(PERSONALITY_QUERY, To(allow), To(eperm));
    }

    if used.contains(&Check::Ioctl) {
        a.bind(ioctl_block);
        a.load(SeccompField::ArgLow(1));
        a.jeq(libc::TIOCSTI as u32, To(eperm), Next);
        a.jeq(libc::TIOCLINUX as u32, To(eperm), To(allow));
    }

    if used.contains(&Check::SocketStrict) {
        a.bind(socket_strict_block);
        a.load(SeccompField::ArgLow(0));
        if opts.deny_inet_sockets {
            a.jeq(libc::AF_INET as u32, To(eperm), Next);
            a.jeq(libc::AF_INET6 as u32, To(eperm), Next);
        }
        if opts.deny_unix_sockets {
            a.jeq(libc::AF_UNIX as u32, To(eperm), Next);
        }
        a.jeq(u32::MAX, To(eperm), To(socket_block));
    }

    if used.contains(&Check::Socket) || used.contains(&Check::SocketStrict) {
        a.bind(socket_block);
        a.load(SeccompField::ArgLow(0));
        a.jeq(libc::AF_PACKET as u32, To(eperm), Next);
        a.jeq(libc::AF_VSOCK as u32, To(eperm), Next);
        a.jeq(libc::AF_NETLINK as u32, To(netlink_block), Next);
        a.load(SeccompField::ArgLow(1));
        a.and(SOCK_TYPE_MASK);
        a.jeq(libc::SOCK_RAW as u32, To(eperm), Next);
        a.jeq(SOCK_PACKET, To(eperm), To(allow));

        a.bind(netlink_block);
        a.load(SeccompField::ArgLow(2));
        a.jeq(NETLINK_ROUTE, To(allow), To(eperm));
    }

    // Shared returns: last, because classic BPF only jumps forward.
    a.bind(kill);
    a.ret(RET_KILL_PROCESS);
    a.bind(eperm);
    a.ret(RET_EPERM);
    a.bind(enosys);
    a.ret(RET_ENOSYS);
    a.bind(allow);
    a.ret(RET_ALLOW);

    a.assemble()
}

// ---------------------------------------------------------------------------------------------
// A tiny classic-BPF assembler with forward labels.

/// The `struct seccomp_data` words the filter reads.
#[derive(Debug, Clone, Copy)]
enum SeccompField {
    Nr,
    Arch,
    /// The low 32 bits of `args[i]`.
    ArgLow(usize),
}

impl SeccompField {
    fn offset(self) -> u32 {
        let off = match self {
            SeccompField::Nr => offset_of!(libc::seccomp_data, nr),
            SeccompField::Arch => offset_of!(libc::seccomp_data, arch),
            // Both supported targets are little-endian (enforced above): the low word comes first.
            SeccompField::ArgLow(i) => {
                assert!(i < 6, "seccomp_data has 6 arguments, not {}", i + 1);
                offset_of!(libc::seccomp_data, args) + i * size_of::<u64>()
            }
        };
        u32::try_from(off).expect("seccomp_data offsets are < 64")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Target {
    /// The next instruction (offset 0).
    Next,
    To(Label),
}
use Target::{Next, To};

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A real instruction; conditional jumps carry unresolved targets.
    Insn { code: u16, k: u32, jt: Target, jf: Target },
    /// Unconditional jump (`BPF_JA`, 32-bit offset) to a label.
    Goto(Label),
    /// Pseudo-op: the label names the next instruction.
    Bind(Label),
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

#[derive(Debug, Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn bind(&mut self, label: Label) {
        self.ops.push(Op::Bind(label));
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Insn { code, k, jt: Next, jf: Next });
    }

    fn load(&mut self, field: SeccompField) {
        self.stmt(LD_W_ABS, field.offset());
    }

    fn and(&mut self, k: u32) {
        self.stmt(ALU_AND_K, k);
    }

    fn ret(&mut self, action: u32) {
        self.stmt(RET_K, action);
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Insn { code, k, jt, jf });
    }

    /// `if A == k goto jt else goto jf`.
    fn jeq(&mut self, k: u32, jt: Target, jf: Target) {
        self.jump(JMP_JEQ_K, k, jt, jf);
    }

    /// `if A >= k goto jt else goto jf` (unsigned).
    fn jge(&mut self, k: u32, jt: Target, jf: Target) {
        self.jump(JMP_JGE_K, k, jt, jf);
    }

    /// `if A & k != 0 goto jt else goto jf`.
    fn jset(&mut self, k: u32, jt: Target, jf: Target) {
        self.jump(JMP_JSET_K, k, jt, jf);
    }

    /// Unconditional long jump, for targets beyond the 255-instruction reach of `jt`/`jf`.
    #[cfg_attr(not(test), allow(dead_code))]
    fn goto(&mut self, label: Label) {
        self.ops.push(Op::Goto(label));
    }

    /// Resolves labels into relative offsets. Panics on an unbound or doubly bound label, a
    /// backward jump, or a conditional jump farther than 255 instructions.
    fn assemble(self) -> Vec<libc::sock_filter> {
        let mut positions: Vec<Option<usize>> = vec![None; self.labels];
        let mut pc = 0;
        for op in &self.ops {
            match op {
                Op::Bind(Label(l)) => {
                    assert!(positions[*l].is_none(), "BPF label {l} bound twice");
                    positions[*l] = Some(pc);
                }
                Op::Insn { .. } | Op::Goto(_) => pc += 1,
            }
        }
        let offset = |from: usize, label: Label| -> usize {
            let to = positions[label.0].unwrap_or_else(|| panic!("BPF label {} unbound", label.0));
            assert!(to > from, "BPF jumps must go forward ({from} -> {to})");
            to - from - 1
        };
        let short = |from: usize, target: Target| -> u8 {
            match target {
                Next => 0,
                To(label) => {
                    let off = offset(from, label);
                    u8::try_from(off)
                        .unwrap_or_else(|_| panic!("BPF conditional jump at {from} spans {off} > 255 instructions"))
                }
            }
        };
        let mut prog = Vec::with_capacity(pc);
        for op in self.ops {
            let at = prog.len();
            match op {
                Op::Bind(_) => {}
                Op::Insn { code, k, jt, jf } => {
                    prog.push(libc::sock_filter { code, jt: short(at, jt), jf: short(at, jf), k })
                }
                Op::Goto(label) => prog.push(libc::sock_filter {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(offset(at, label)).expect("BPF program shorter than 2^32"),
                }),
            }
        }
        prog
    }
}

// ---------------------------------------------------------------------------------------------
// Test-only interpreter.

/// A classic-BPF interpreter over `struct seccomp_data`, used to prove the program's decisions.
///
/// It implements the kernel's semantics for the instructions seccomp accepts that this module
/// emits, checks the program the way `bpf_check_classic` + `seccomp_check_filter` do first, and
/// panics on anything else rather than guessing.
#[cfg(test)]
mod bpf {
    /// The kernel ABI layout of `struct seccomp_data`, written out independently of `libc`.
    const NR: usize = 0;
    const ARCH: usize = 4;
    const IP: usize = 8;
    const ARGS: usize = 16;
    pub const SECCOMP_DATA_LEN: usize = 64;

    fn serialize(d: &libc::seccomp_data) -> [u8; SECCOMP_DATA_LEN] {
        let mut b = [0u8; SECCOMP_DATA_LEN];
        b[NR..NR + 4].copy_from_slice(&d.nr.to_ne_bytes());
        b[ARCH..ARCH + 4].copy_from_slice(&d.arch.to_ne_bytes());
        b[IP..IP + 8].copy_from_slice(&d.instruction_pointer.to_ne_bytes());
        for (i, arg) in d.args.iter().enumerate() {
            b[ARGS + 8 * i..ARGS + 8 * i + 8].copy_from_slice(&arg.to_ne_bytes());
        }
        b
    }

    /// Static checks the kernel applies before accepting a seccomp filter, restricted to the
    /// opcodes this interpreter knows.
    pub fn validate(prog: &[libc::sock_filter]) -> Result<(), String> {
        let max = usize::try_from(libc::BPF_MAXINSNS).expect("positive");
        if prog.is_empty() || prog.len() > max {
            return Err(format!("program length {} not in 1..={max}", prog.len()));
        }
        for (pc, ins) in prog.iter().enumerate() {
            let in_range = |off: usize| pc + 1 + off < prog.len();
            match ins.code {
                super::LD_W_ABS => {
                    let k = usize::try_from(ins.k).expect("u32 fits usize");
                    if k % 4 != 0 || k >= SECCOMP_DATA_LEN {
                        return Err(format!("{pc}: bad seccomp_data load offset {k}"));
                    }
                }
                super::ALU_AND_K | super::RET_K => {}
                super::JMP_JA => {
                    if !in_range(usize::try_from(ins.k).expect("u32 fits usize")) {
                        return Err(format!("{pc}: JA out of range"));
                    }
                }
                super::JMP_JEQ_K | super::JMP_JGE_K | super::JMP_JSET_K => {
                    if !in_range(ins.jt.into()) || !in_range(ins.jf.into()) {
                        return Err(format!("{pc}: conditional jump out of range"));
                    }
                }
                code => return Err(format!("{pc}: unsupported opcode {code:#x}")),
            }
        }
        let last = prog.last().expect("non-empty");
        if last.code != super::RET_K {
            return Err("program does not end with RET".to_owned());
        }
        Ok(())
    }

    /// Runs `prog` on `data` and returns the seccomp action.
    pub fn run(prog: &[libc::sock_filter], data: &libc::seccomp_data) -> u32 {
        if let Err(e) = validate(prog) {
            panic!("invalid BPF program: {e}");
        }
        let bytes = serialize(data);
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        // Jumps only go forward, so each step strictly increases pc: at most prog.len() steps.
        loop {
            let ins = prog.get(pc).unwrap_or_else(|| panic!("fell off the program at {pc}"));
            let skip = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
            pc += 1;
            match ins.code {
                super::LD_W_ABS => {
                    let k = usize::try_from(ins.k).expect("u32 fits usize");
                    let word: [u8; 4] = bytes[k..k + 4].try_into().expect("4 bytes");
                    acc = u32::from_ne_bytes(word);
                }
                super::ALU_AND_K => acc &= ins.k,
                super::JMP_JA => pc += usize::try_from(ins.k).expect("u32 fits usize"),
                super::JMP_JEQ_K => pc += skip(acc == ins.k),
                super::JMP_JGE_K => pc += skip(acc >= ins.k),
                super::JMP_JSET_K => pc += skip(acc & ins.k != 0),
                super::RET_K => return ins.k,
                code => panic!("unsupported opcode {code:#x}"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ARCH: u32 = AUDIT_ARCH_NATIVE;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    const DEFAULT: FilterOptions =
        FilterOptions { allow_nested_userns: false, deny_inet_sockets: false, deny_unix_sockets: false };
    const NESTED: FilterOptions =
        FilterOptions { allow_nested_userns: true, deny_inet_sockets: false, deny_unix_sockets: false };
    const DEGRADED: FilterOptions =
        FilterOptions { allow_nested_userns: false, deny_inet_sockets: true, deny_unix_sockets: true };

    #[test]
    fn degraded_mode_denies_inet_and_named_unix_sockets_but_not_socketpair() {
        let to_u64 = |v: libc::c_int| u64::try_from(v).expect("non-negative constant");
        let (inet, inet6, unix) = (to_u64(libc::AF_INET), to_u64(libc::AF_INET6), to_u64(libc::AF_UNIX));
        let stream = to_u64(libc::SOCK_STREAM);
        for domain in [inet, inet6, unix] {
            assert_eq!(decide(&DEGRADED, libc::SYS_socket, [domain, stream, 0, 0, 0, 0]), RET_EPERM);
            assert_eq!(decide(&DEFAULT, libc::SYS_socket, [domain, stream, 0, 0, 0, 0]), RET_ALLOW);
        }
        assert_eq!(decide(&DEGRADED, libc::SYS_socketpair, [unix, stream, 0, 0, 0, 0]), RET_ALLOW);
        // The ordinary socket rules still apply in the degraded mode.
        let vsock = to_u64(libc::AF_VSOCK);
        assert_eq!(decide(&DEGRADED, libc::SYS_socket, [vsock, stream, 0, 0, 0, 0]), RET_EPERM);
        let netlink = to_u64(libc::AF_NETLINK);
        assert_eq!(decide(&DEGRADED, libc::SYS_socket, [netlink, to_u64(libc::SOCK_RAW), 0, 0, 0, 0]), RET_ALLOW);
        // Only one of the two.
        let inet_only = FilterOptions { deny_inet_sockets: true, ..DEFAULT };
        assert_eq!(decide(&inet_only, libc::SYS_socket, [unix, stream, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(decide(&inet_only, libc::SYS_socket, [inet, stream, 0, 0, 0, 0]), RET_EPERM);
    }

    fn data(arch: u32, nr: libc::c_long, args: [u64; 6]) -> libc::seccomp_data {
        libc::seccomp_data { nr: i32::try_from(nr).unwrap(), arch, instruction_pointer: 0x7fff_dead_beef, args }
    }

    fn decide(opts: &FilterOptions, nr: libc::c_long, args: [u64; 6]) -> u32 {
        bpf::run(&build_filter(opts), &data(ARCH, nr, args))
    }

    fn decide0(opts: &FilterOptions, nr: libc::c_long) -> u32 {
        decide(opts, nr, [0; 6])
    }

    /// The brief's list, written out independently of the module's tables.
    fn expected_eperm() -> Vec<(&'static str, libc::c_long)> {
        #[allow(unused_mut)]
        let mut v = vec![
            ("ptrace", libc::SYS_ptrace),
            ("process_vm_readv", libc::SYS_process_vm_readv),
            ("process_vm_writev", libc::SYS_process_vm_writev),
            ("bpf", libc::SYS_bpf),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("keyctl", libc::SYS_keyctl),
            ("add_key", libc::SYS_add_key),
            ("request_key", libc::SYS_request_key),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("io_uring_enter", libc::SYS_io_uring_enter),
            ("io_uring_register", libc::SYS_io_uring_register),
            ("kexec_load", libc::SYS_kexec_load),
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("delete_module", libc::SYS_delete_module),
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("pivot_root", libc::SYS_pivot_root),
            ("chroot", libc::SYS_chroot),
            ("move_mount", libc::SYS_move_mount),
            ("open_tree", libc::SYS_open_tree),
            ("open_tree_attr", 467),
            ("fsopen", libc::SYS_fsopen),
            ("fsconfig", libc::SYS_fsconfig),
            ("fsmount", libc::SYS_fsmount),
            ("fspick", libc::SYS_fspick),
            ("mount_setattr", libc::SYS_mount_setattr),
            ("swapon", libc::SYS_swapon),
            ("swapoff", libc::SYS_swapoff),
            ("reboot", libc::SYS_reboot),
            ("acct", libc::SYS_acct),
            ("settimeofday", libc::SYS_settimeofday),
            ("clock_settime", libc::SYS_clock_settime),
            ("clock_adjtime", libc::SYS_clock_adjtime),
            ("adjtimex", libc::SYS_adjtimex),
            ("name_to_handle_at", libc::SYS_name_to_handle_at),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("lookup_dcookie", libc::SYS_lookup_dcookie),
            ("quotactl", libc::SYS_quotactl),
            ("quotactl_fd", libc::SYS_quotactl_fd),
            ("vhangup", libc::SYS_vhangup),
            ("pidfd_getfd", libc::SYS_pidfd_getfd),
            ("process_madvise", libc::SYS_process_madvise),
            ("fanotify_init", libc::SYS_fanotify_init),
            ("syslog", libc::SYS_syslog),
            ("kcmp", libc::SYS_kcmp),
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            ("kexec_file_load", 320),
            ("iopl", libc::SYS_iopl),
            ("ioperm", libc::SYS_ioperm),
            ("modify_ldt", libc::SYS_modify_ldt),
            ("uselib", libc::SYS_uselib),
            ("_sysctl", libc::SYS__sysctl),
        ]);
        #[cfg(target_arch = "aarch64")]
        v.push(("kexec_file_load", 294));
        v
    }

    #[test]
    fn seccomp_data_layout_matches_kernel_abi() {
        assert_eq!(offset_of!(libc::seccomp_data, nr), 0);
        assert_eq!(offset_of!(libc::seccomp_data, arch), 4);
        assert_eq!(offset_of!(libc::seccomp_data, instruction_pointer), 8);
        assert_eq!(offset_of!(libc::seccomp_data, args), 16);
        assert_eq!(size_of::<libc::seccomp_data>(), bpf::SECCOMP_DATA_LEN);
        assert_eq!(SeccompField::ArgLow(2).offset(), 32);
    }

    #[test]
    fn program_is_valid_and_small_for_every_option() {
        for opts in [DEFAULT, NESTED] {
            let prog = build_filter(&opts);
            bpf::validate(&prog).unwrap();
            assert!(prog.len() < 4096, "{} instructions", prog.len());
            // The dispatch chain is one JEQ per rule; blocks add a couple dozen instructions.
            assert!(prog.len() < 120, "{} instructions", prog.len());
        }
    }

    #[test]
    fn every_listed_syscall_gets_eperm() {
        for opts in [DEFAULT, NESTED] {
            for (name, nr) in expected_eperm() {
                assert_eq!(decide0(&opts, nr), EPERM, "{name} ({nr}) with {opts:?}");
            }
        }
    }

    #[test]
    fn clone3_gets_enosys_always() {
        for opts in [DEFAULT, NESTED] {
            assert_eq!(decide0(&opts, libc::SYS_clone3), ENOSYS);
        }
    }

    #[test]
    fn common_syscalls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_close,
            libc::SYS_execve,
            libc::SYS_mmap,
            libc::SYS_mprotect,
            libc::SYS_futex,
            libc::SYS_exit_group,
            libc::SYS_wait4,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_landlock_restrict_self,
            libc::SYS_statx,
        ] {
            for opts in [DEFAULT, NESTED] {
                assert_eq!(decide0(&opts, nr), ALLOW, "nr {nr}");
            }
        }
    }

    #[test]
    fn foreign_arch_is_killed() {
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
        const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
        let prog = build_filter(&DEFAULT);
        for arch in [AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, 0] {
            let expected = if arch == ARCH { ALLOW } else { KILL };
            assert_eq!(bpf::run(&prog, &data(arch, libc::SYS_read, [0; 6])), expected, "arch {arch:#x}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_are_denied() {
        let prog = build_filter(&NESTED);
        // x32 read is 0x40000000 | 0; x32 ptrace is 0x40000000 | 521.
        for nr in [0x4000_0000, 0x4000_0000 | 521, 0x4000_0000 | libc::SYS_write] {
            assert_eq!(bpf::run(&prog, &data(ARCH, nr, [0; 6])), EPERM, "{nr:#x}");
        }
        // Negative numbers have the bit set too.
        assert_eq!(bpf::run(&prog, &data(ARCH, -1, [0; 6])), EPERM);
        assert_eq!(bpf::run(&prog, &data(ARCH, 0x3fff_ffff, [0; 6])), ALLOW);
    }

    const THREAD_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;

    const NS_FLAGS: [(&str, libc::c_int); 8] = [
        ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
        ("CLONE_NEWNS", libc::CLONE_NEWNS),
        ("CLONE_NEWPID", libc::CLONE_NEWPID),
        ("CLONE_NEWNET", libc::CLONE_NEWNET),
        ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
        ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
        ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
        ("CLONE_NEWTIME", libc::CLONE_NEWTIME),
    ];

    #[test]
    fn clone_allows_fork_and_threads_but_not_namespaces() {
        let sigchld = libc::SIGCHLD as u64;
        let clone = |opts: &FilterOptions, flags: u64| decide(opts, libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
        for opts in [DEFAULT, NESTED] {
            assert_eq!(clone(&opts, sigchld), ALLOW, "fork");
            assert_eq!(clone(&opts, THREAD_FLAGS), ALLOW, "thread");
            let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld;
            assert_eq!(clone(&opts, vfork), ALLOW, "vfork");
        }
        for (name, flag) in NS_FLAGS {
            let flags = u64::try_from(flag).unwrap() | sigchld;
            assert_eq!(clone(&DEFAULT, flags), EPERM, "{name}");
            assert_eq!(clone(&NESTED, flags), ALLOW, "{name} with nested userns");
        }
        // The kernel truncates legacy clone flags to 32 bits, so high bits create nothing.
        let high = u64::try_from(libc::CLONE_NEWUSER).unwrap() << 32 | sigchld;
        assert_eq!(clone(&DEFAULT, high), ALLOW);
        // The stack argument is not the flags argument.
        let ns = u64::try_from(libc::CLONE_NEWNS).unwrap();
        assert_eq!(decide(&DEFAULT, libc::SYS_clone, [sigchld, ns, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn unshare_and_setns_follow_the_option() {
        let newuser = u64::try_from(libc::CLONE_NEWUSER).unwrap();
        for nr in [libc::SYS_unshare, libc::SYS_setns] {
            assert_eq!(decide(&DEFAULT, nr, [newuser, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(decide(&NESTED, nr, [newuser, 0, 0, 0, 0, 0]), ALLOW);
        }
    }

    #[test]
    fn personality_allows_only_default_and_query() {
        let p = |persona: u64| decide(&DEFAULT, libc::SYS_personality, [persona, 0, 0, 0, 0, 0]);
        assert_eq!(p(0), ALLOW);
        assert_eq!(p(0xffff_ffff), ALLOW);
        assert_eq!(p(0xdead_0000_0000_0000), ALLOW, "kernel sees unsigned int 0");
        assert_eq!(p(u64::try_from(libc::ADDR_NO_RANDOMIZE).unwrap()), EPERM);
        assert_eq!(p(0x0040_0000), EPERM, "READ_IMPLIES_EXEC");
        assert_eq!(p(0x0002_0000), EPERM, "UNAME26");
        assert_eq!(p(8), EPERM, "PER_LINUX32");
    }

    #[test]
    // `libc::Ioctl` is `c_ulong` on glibc and `c_int` on musl: the casts are needed on one of them.
    #[allow(clippy::unnecessary_cast)]
    fn ioctl_denies_terminal_injection_on_low_32_bits() {
        let ioctl = |fd: u64, req: u64| decide(&DEFAULT, libc::SYS_ioctl, [fd, req, 0, 0, 0, 0]);
        assert_eq!(ioctl(0, 0x5412), EPERM, "TIOCSTI");
        assert_eq!(ioctl(0, 0xdead_beef_0000_5412), EPERM, "TIOCSTI with high bits");
        assert_eq!(ioctl(0, 0x541C), EPERM, "TIOCLINUX");
        assert_eq!(ioctl(0, 0xffff_ffff_0000_541c), EPERM, "TIOCLINUX with high bits");
        assert_eq!(ioctl(0, libc::TIOCGWINSZ as u64), ALLOW, "TIOCGWINSZ");
        assert_eq!(ioctl(0, libc::FIONREAD as u64), ALLOW, "FIONREAD");
        assert_eq!(ioctl(0x5412, 0x5413), ALLOW, "fd equal to TIOCSTI is irrelevant");
        assert_eq!(libc::TIOCSTI as u64, 0x5412);
        assert_eq!(libc::TIOCLINUX as u64, 0x541C);
    }

    #[test]
    fn sockets() {
        let to_u64 = |v: libc::c_int| u64::try_from(v).unwrap();
        let (inet, inet6, unix) = (to_u64(libc::AF_INET), to_u64(libc::AF_INET6), to_u64(libc::AF_UNIX));
        let (netlink, packet, vsock) = (to_u64(libc::AF_NETLINK), to_u64(libc::AF_PACKET), to_u64(libc::AF_VSOCK));
        let (stream, dgram, raw) = (to_u64(libc::SOCK_STREAM), to_u64(libc::SOCK_DGRAM), to_u64(libc::SOCK_RAW));
        let flags = to_u64(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK);
        let icmp = to_u64(libc::IPPROTO_ICMP);
        let cases: &[(&str, u64, u64, u64, u32)] = &[
            ("inet stream", inet, stream | flags, 0, ALLOW),
            ("inet6 dgram", inet6, dgram, 0, ALLOW),
            ("ping socket", inet, dgram, icmp, ALLOW),
            ("unix stream", unix, stream | flags, 0, ALLOW),
            ("unix dgram", unix, dgram, 0, ALLOW),
            ("netlink route raw", netlink, raw | flags, 0, ALLOW),
            ("netlink route dgram", netlink, dgram, 0, ALLOW),
            ("netlink audit", netlink, raw, 9, EPERM),
            ("netlink kobject_uevent", netlink, dgram, 15, EPERM),
            ("netlink netfilter", netlink, raw, 12, EPERM),
            ("netlink protocol high bits", netlink, raw, 0xffff_ffff_0000_0000, ALLOW),
            ("inet raw", inet, raw, 0, EPERM),
            ("inet raw cloexec", inet, raw | flags, 0, EPERM),
            ("inet6 raw", inet6, raw, 58, EPERM),
            ("inet packet type", inet, 10, 0, EPERM),
            ("packet", packet, dgram, 0, EPERM),
            ("packet raw", packet, raw, 0, EPERM),
            ("vsock", vsock, stream, 0, EPERM),
            ("domain high bits", 0x1_0000_0000 | packet, dgram, 0, EPERM),
        ];
        for &(what, domain, ty, proto, expected) in cases {
            let args = [domain, ty, proto, 0, 0, 0];
            assert_eq!(decide(&DEFAULT, libc::SYS_socket, args), expected, "socket {what}");
            assert_eq!(decide(&DEFAULT, libc::SYS_socketpair, args), expected, "socketpair {what}");
        }
    }

    #[test]
    fn denied_syscalls_agrees_with_the_program() {
        for opts in [DEFAULT, NESTED] {
            let list = denied_syscalls(&opts);
            let names: Vec<_> = list.iter().map(|(n, _)| *n).collect();
            for (name, _) in expected_eperm() {
                assert!(names.contains(&name), "{name} missing from denied_syscalls");
            }
            for name in ["clone3", "personality", "ioctl", "socket", "socketpair"] {
                assert!(names.contains(&name), "{name} missing");
            }
            for name in ["unshare", "setns", "clone"] {
                assert_eq!(names.contains(&name), !opts.allow_nested_userns, "{name}");
            }
            // Every unconditional entry is enforced by the program as described.
            for rule in rules(&opts) {
                let nr = libc::c_long::from(rule.nr);
                match rule.check {
                    Check::Eperm => assert_eq!(decide0(&opts, nr), EPERM, "{}", rule.name),
                    Check::Enosys => assert_eq!(decide0(&opts, nr), ENOSYS, "{}", rule.name),
                    _ => {}
                }
            }
            assert!(list.iter().all(|(_, d)| d.starts_with("denied")));
        }
    }

    #[test]
    fn rules_have_distinct_small_numbers() {
        for opts in [DEFAULT, NESTED] {
            let rules = rules(&opts);
            for (i, a) in rules.iter().enumerate() {
                assert!(a.nr < 1024, "{} = {}", a.name, a.nr);
                for b in &rules[i + 1..] {
                    assert_ne!(a.nr, b.nr, "{} and {} share a number", a.name, b.name);
                    assert_ne!(a.name, b.name);
                }
            }
        }
    }

    // --- The assembler and the interpreter themselves.

    #[test]
    fn assembler_resolves_labels_and_long_jumps() {
        let mut a = Asm::default();
        let near = a.label();
        let far = a.label();
        a.load(SeccompField::Nr);
        a.jeq(7, Next, To(near));
        a.goto(far);
        a.bind(near);
        a.ret(2);
        for _ in 0..300 {
            a.and(0xffff_ffff);
        }
        a.bind(far);
        a.ret(1);
        let prog = a.assemble();
        assert_eq!(prog.len(), 305);
        assert_eq!((prog[1].jt, prog[1].jf), (0, 1));
        assert_eq!((prog[2].code, prog[2].k), (JMP_JA, 301));
        bpf::validate(&prog).unwrap();
        assert_eq!(bpf::run(&prog, &data(ARCH, 7, [0; 6])), 1, "long jump taken");
        assert_eq!(bpf::run(&prog, &data(ARCH, 8, [0; 6])), 2);
    }

    #[test]
    #[should_panic(expected = "spans")]
    fn assembler_rejects_short_jump_overflow() {
        let mut a = Asm::default();
        let far = a.label();
        a.load(SeccompField::Nr);
        a.jeq(7, To(far), Next);
        for _ in 0..256 {
            a.and(1);
        }
        a.bind(far);
        a.ret(0);
        let _ = a.assemble();
    }

    #[test]
    #[should_panic(expected = "unbound")]
    fn assembler_rejects_unbound_label() {
        let mut a = Asm::default();
        let nowhere = a.label();
        a.jeq(0, To(nowhere), Next);
        a.ret(0);
        let _ = a.assemble();
    }

    #[test]
    fn interpreter_semantics() {
        // A JSET/JGE/AND program with hand-computed offsets.
        let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let prog = [
            ins(LD_W_ABS, 0, 0, 16 + 8 + 4), // high word of args[1]
            ins(JMP_JGE_K, 0, 4, 0x10),      // >= 0x10 -> next, else ret 3
            ins(ALU_AND_K, 0, 0, 0x0f),
            ins(JMP_JSET_K, 1, 0, 0x01), // odd -> ret 1
            ins(RET_K, 0, 0, 2),
            ins(RET_K, 0, 0, 1),
            ins(RET_K, 0, 0, 3),
        ];
        let run = |hi: u64| bpf::run(&prog, &data(ARCH, 0, [0, hi << 32 | 0xffff_ffff, 0, 0, 0, 0]));
        assert_eq!(run(0x0f), 3);
        assert_eq!(run(0x10), 2);
        assert_eq!(run(0x11), 1);
        assert_eq!(run(0xffff_ff13), 1);
    }

    #[test]
    fn validator_rejects_what_the_kernel_rejects() {
        let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        assert!(bpf::validate(&[]).is_err());
        assert!(bpf::validate(&[ins(LD_W_ABS, 0, 0, 0)]).is_err(), "no RET");
        assert!(bpf::validate(&[ins(LD_W_ABS, 0, 0, 2), ins(RET_K, 0, 0, 0)]).is_err());
        assert!(bpf::validate(&[ins(LD_W_ABS, 0, 0, 64), ins(RET_K, 0, 0, 0)]).is_err());
        assert!(bpf::validate(&[ins(JMP_JEQ_K, 1, 0, 0), ins(RET_K, 0, 0, 0)]).is_err());
        assert!(bpf::validate(&[ins(JMP_JA, 0, 0, 1), ins(RET_K, 0, 0, 0)]).is_err());
        assert!(bpf::validate(&[ins(0x07, 0, 0, 0), ins(RET_K, 0, 0, 0)]).is_err());
        let too_long = vec![ins(RET_K, 0, 0, 0); 4097];
        assert!(bpf::validate(&too_long).is_err());
        assert!(bpf::validate(&[ins(JMP_JEQ_K, 0, 0, 0), ins(RET_K, 0, 0, 0)]).is_ok());
    }

    #[test]
    #[ignore = "prints the program; run with --ignored --nocapture"]
    fn dump_program() {
        let prog = build_filter(&DEFAULT);
        for (pc, i) in prog.iter().enumerate() {
            println!("{pc:3}: code={:#06x} jt={:3} jf={:3} k={:#x}", i.code, i.jt, i.jf, i.k);
        }
        println!("{} instructions", prog.len());
    }
}
