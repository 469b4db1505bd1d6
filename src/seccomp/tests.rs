use super::rules::{allowlist, ioctls};
use super::*;

#[test]
fn test_ioctl_numbers_are_the_kernels() {
    // From the kernel's headers (_IO/_IOR/_IOWR on KVMIO 0xAE with the structures' sizes).
    assert_eq!(ioctls::KVM_RUN(), 0xae80);
    assert_eq!(ioctls::KVM_GET_REGS(), 0x8090_ae81);
    assert_eq!(ioctls::KVM_GET_SREGS(), 0x8138_ae83);
    assert_eq!(ioctls::KVM_GET_LAPIC(), 0x8400_ae8e);
    assert_eq!(ioctls::KVM_GET_MP_STATE(), 0x8004_ae98);
    assert_eq!(ioctls::KVM_GET_VCPU_EVENTS(), 0x8040_ae9f);
    assert_eq!(ioctls::KVM_GET_IRQCHIP(), 0xc208_ae62);
    assert_eq!(ioctls::KVM_GET_CPUID2(), 0xc008_ae91);
    assert_eq!(ioctls::KVM_GET_MSRS(), 0xc008_ae88);
    assert_eq!(ioctls::KVM_GET_XSAVE(), 0x9000_aea4);
    assert_eq!(ioctls::KVM_GET_XCRS(), 0x8188_aea6);
    assert_eq!(ioctls::KVM_GET_DEBUGREGS(), 0x8080_aea1);
    assert_eq!(ioctls::KVM_GET_PIT2(), 0x8070_ae9f);
    assert_eq!(ioctls::KVM_GET_CLOCK(), 0x8030_ae7c);
}

#[test]
fn test_every_role_compiles_at_every_level() {
    for role in Role::ALL {
        assert_eq!(Role::ALL[role as usize], role);
        for level in [SeccompLevel::Log, SeccompLevel::Kill] {
            let filters = role_filters(role, level).unwrap();
            let expected = super::rules::refusals(role).len() + 1;
            assert_eq!(filters.len(), expected, "{role:?}");
            assert!(filters.iter().all(|f| !f.is_empty()), "{role:?}");
        }
        assert!(role_filters(role, SeccompLevel::Off).is_err());
    }
}

#[test]
fn test_no_role_may_run_programs_or_leave_its_box() {
    let forbidden = [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_ptrace,
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_mount,
        libc::SYS_pivot_root,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_setuid,
        libc::SYS_kill,
        libc::SYS_seccomp,
        libc::SYS_process_vm_writev,
        libc::SYS_init_module,
    ];
    for role in Role::ALL {
        let rules = allowlist(role);
        for nr in forbidden {
            // The event loop's vsock device connects guests to the Unix sockets beside its
            // uds_path: a non-blocking Unix stream socket, nothing else.
            if role == Role::Vmm && nr == libc::SYS_connect {
                continue;
            }
            if role == Role::Vmm && nr == libc::SYS_socket {
                assert_eq!(rules[&nr].len(), 1, "socket: one checked form");
                continue;
            }
            assert!(!rules.contains_key(&nr), "{role:?} allows syscall {nr}");
        }
        // Executable memory, writable opens and clone without CLONE_THREAD are refused by the
        // argument checks: every one of these syscalls carries conditions.
        for nr in [libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_madvise] {
            assert!(!rules[&nr].is_empty(), "{role:?}: {nr} unchecked");
        }
        if role != Role::ApiService {
            assert!(
                !rules[&libc::SYS_openat].is_empty(),
                "{role:?}: openat unchecked"
            );
        }
        if let Some(clone) = rules.get(&libc::SYS_clone) {
            assert!(!clone.is_empty(), "{role:?}: clone unchecked");
        }
        assert!(
            !rules[&libc::SYS_fcntl].is_empty(),
            "{role:?}: fcntl unchecked"
        );
        if let Some(ioctl) = rules.get(&libc::SYS_ioctl) {
            assert!(!ioctl.is_empty(), "{role:?}: ioctl unchecked");
        }
    }
}

#[test]
fn test_only_the_vcpu_role_runs_the_guest() {
    let ioctl_rules = |role: Role| format!("{:?}", allowlist(role).get(&libc::SYS_ioctl));
    let run = format!("value: {}", ioctls::KVM_RUN());
    assert!(ioctl_rules(Role::Vcpu).contains(&run));
    for role in [
        Role::Vmm,
        Role::Api,
        Role::ApiService,
        Role::Console,
        Role::Signals,
    ] {
        assert!(!ioctl_rules(role).contains(&run), "{role:?} may KVM_RUN");
    }
}

#[test]
fn test_a_spawned_thread_runs_under_its_roles_filter_and_the_caller_does_not() {
    let status = || std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let seccomp_line = |s: String| {
        s.lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(str::to_string)
            .unwrap()
    };
    let before = seccomp_line(status());
    // The API service's role: the one that may open files, such as its own status.
    let seen = crate::threads::spawn(Role::ApiService, "seccomp-test", move || {
        (seccomp_line(status()), current())
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(seen, ("Seccomp:\t2".to_string(), Some(Role::ApiService)));
    assert_eq!(seccomp_line(status()), before);
    assert_eq!(current(), None);
}

#[test]
fn test_a_filtered_thread_cannot_start_one_of_another_role() {
    let nested = crate::threads::spawn(Role::Console, "seccomp-outer", || {
        crate::threads::spawn(Role::Vcpu, "seccomp-inner", || ()).map(|_| ())
    })
    .unwrap()
    .join()
    .unwrap();
    let err = nested.unwrap_err().to_string();
    assert!(
        err.contains("console syscall filter cannot start a vcpu thread"),
        "{err}"
    );
}

#[test]
fn test_a_thread_that_opens_nothing_gets_eacces_from_openat() {
    for role in [
        Role::Signals,
        Role::Vmm,
        Role::Vcpu,
        Role::Console,
        Role::Api,
    ] {
        let opened = crate::threads::spawn(role, "seccomp-open", || {
            std::fs::File::open("/proc/self/status").map_err(|e| e.raw_os_error())
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(opened.err(), Some(Some(libc::EACCES)), "{role:?}");
    }
    let opened = crate::threads::spawn(Role::ApiService, "seccomp-open", || {
        std::fs::read_to_string("/proc/self/status").is_ok()
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(opened, "the API service opens what it is asked to");
}
