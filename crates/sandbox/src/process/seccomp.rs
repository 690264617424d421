//! The syscall filter every jailed function runs under: what functions never need is
//! refused with `EPERM`, everything else is allowed.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright: debugging other processes, loading kernels and modules, mounting,
/// new namespaces, kernel keyrings, BPF and perf, the clock, swap, reboot.
const REFUSED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// The compiled filter as the kernel's `struct sock_filter` array (what bwrap's `--seccomp`
/// reads): `clone3` answers `ENOSYS` (its flags cannot be inspected, and C libraries fall
/// back to `clone`), `clone` with `CLONE_NEWUSER` and the calls in [`REFUSED`] answer
/// `EPERM`.
pub(crate) fn program_bytes() -> io::Result<Vec<u8>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| io::Error::other(format!("no syscall filter for this machine: {e}")))?;
    let bad = |e: seccompiler::BackendError| io::Error::other(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|&nr| (nr, Vec::new())).collect();
    let new_user = libc::CLONE_NEWUSER as u64;
    rules.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(new_user),
                    new_user,
                )
                .map_err(bad)?,
            ])
            .map_err(bad)?,
        ],
    );
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(bad)?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(bad)?;
    // One program: the clone3 filter's instructions run first and fall through to the
    // other's when the call is not clone3. Both start by checking the architecture.
    let first: BpfProgram = no_clone3.try_into().map_err(bad)?;
    let second: BpfProgram = refuse.try_into().map_err(bad)?;
    Ok(chain(first, second)
        .iter()
        .flat_map(|f| {
            let mut b = Vec::with_capacity(8);
            b.extend_from_slice(&f.code.to_ne_bytes());
            b.push(f.jt);
            b.push(f.jf);
            b.extend_from_slice(&f.k.to_ne_bytes());
            b
        })
        .collect())
}

/// Joins two filters whose default action is "allow" into one program: every `RET ALLOW`
/// of the first becomes a jump to the start of the second.
fn chain(first: BpfProgram, second: BpfProgram) -> BpfProgram {
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const JA: u16 = 0x05; // BPF_JMP | BPF_JA
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let n = first.len();
    let mut out: BpfProgram = first
        .into_iter()
        .enumerate()
        .map(|(i, mut f)| {
            if f.code == RET_K && f.k == ALLOW {
                f.code = JA;
                f.jt = 0;
                f.jf = 0;
                // Relative to the next instruction: the second program starts at n.
                f.k = (n - i - 1) as u32;
            }
            f
        })
        .collect();
    out.extend(second);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_whole_instructions_and_refuses_the_listed_calls() {
        let bytes = program_bytes().unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(bytes.len() % 8, 0);
        // Under the kernel's limit of 4096 instructions.
        assert!(bytes.len() / 8 < 4096);
    }

    #[test]
    fn chaining_turns_only_allow_into_a_jump_to_the_second_program() {
        let f = |code: u16, k: u32| seccompiler::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let first = vec![f(0x20, 4), f(0x06, 0x7fff_0000), f(0x06, 0x0005_0026)];
        let second = vec![f(0x06, 0x7fff_0000)];
        let out = chain(first, second);
        assert_eq!(out.len(), 4);
        assert_eq!((out[1].code, out[1].k), (0x05, 1));
        assert_eq!((out[2].code, out[2].k), (0x06, 0x0005_0026));
        assert_eq!((out[3].code, out[3].k), (0x06, 0x7fff_0000));
    }
}
