#!/bin/sh
# Runs inside the test host (see linux-boot.sh): boots the same Linux guest N times with fennec
# and with QEMU's microvm machine (and with /fennec/fennec-baseline, an earlier fennec, when it
# is there), alternating, and prints one line per boot:
#   BENCH <vmm> <centiseconds from start to exit> rss=<peak KiB> [boot=<ms to the boot timer>]
# (the boot timer: fennec's, logged with -v; QEMU has none. The peak RSS is busybox time's,
# which counts busybox's own few MiB too: right for a Linux guest's hundred, not for less.)
# The guest runs `true` from its init and reboots (reboot=t: a triple fault, which both VMMs
# turn into an exit).
n="${N:-10}"
cmdline='console=ttyS0 quiet panic=-1 reboot=t fennec.run="true"'
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
boot() {
    vmm="$1"; shift
    start=$(now)
    time -v -o /tmp/rusage "$@" > /tmp/console 2>&1 < /dev/null
    end=$(now)
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' /tmp/rusage)
    if grep -q "FENNEC-GUEST-DONE 0" /tmp/console; then
        boot=$(sed -n 's/.*Guest boot time: \([0-9.]*\) ms.*/\1/p' /tmp/console | head -n 1)
        echo "BENCH $vmm $((end - start)) rss=$rss${boot:+ boot=$boot}"
    else
        echo "BENCH-FAILED $vmm"; tail -n 20 /tmp/console
    fi
}
i=0
while [ "$i" -lt "$n" ]; do
    boot fennec /fennec/fennec run -v --kernel /guest/vmlinux --initrd /guest/initramfs.cpio \
        --memory 256 --cmdline "$cmdline"
    if [ -x /fennec/fennec-baseline ]; then
        boot fennec-baseline /fennec/fennec-baseline run -v --kernel /guest/vmlinux \
            --initrd /guest/initramfs.cpio --memory 256 --cmdline "$cmdline"
    fi
    boot qemu-microvm /fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm -enable-kvm \
        -cpu host -m 256 -smp 1 -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel /guest/vmlinux -initrd /guest/initramfs.cpio -append "$cmdline"
    i=$((i + 1))
done
