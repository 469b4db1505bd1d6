/*
 * kvm-anchor READY_FILE: part of the test host, started by its init before anything uses KVM.
 * Makes one VM with an in-kernel irqchip and one vCPU that never runs, writes READY_FILE, and
 * holds them until killed.
 *
 * Why: KVM counts the vCPUs whose local APIC is software-disabled in a static key. Every time
 * that count goes from 0 to 1 or back (a guest created; its kernel enabling its APIC), KVM's own
 * code is live-patched while the other CPU may be running it. Under the test host's
 * multi-threaded TCG that patching sometimes never finishes for the CPU running the patched
 * instruction: both CPUs then sit in __apic_accept_irq, one in the breakpoint handler, and the
 * test host freezes (soft lockups, then silence). A vCPU whose APIC is never enabled keeps the
 * count above zero, so the code is patched once, here, and never while a test or benchmark runs.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvm-anchor READY_FILE\n");
        return 2;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = kvm < 0 ? -1 : ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0 || ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0 || ioctl(vm, KVM_CREATE_VCPU, 0) < 0) {
        perror("kvm-anchor: cannot make its VM");
        return 1;
    }
    FILE *ready = fopen(argv[1], "w");
    if (!ready || fputs("in place\n", ready) < 0 || fclose(ready) != 0) {
        perror("kvm-anchor: cannot write the ready file");
        return 1;
    }
    for (;;)
        pause();
}
