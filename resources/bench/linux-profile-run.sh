#!/bin/sh
# Runs inside the test host (see linux-profile.sh): profiles N boots of the Linux guest under
# fennec and under QEMU's microvm machine (and /fennec/fennec-baseline, an earlier fennec, when
# it is there), alternating. Each boot is quiet, with initcall_debug
# and printk times; the guest's init prints its kernel log (dmesg) and reboots, so the times of
# the phases are the guest's own, unaffected by the serial port. Meanwhile the test host's KVM
# traces every VM exit of the guest (kvm_exit), the MSR write that starts the guest's clock (the
# moment its printk time 0 stands for), the guest's write to fennec's boot-timer address (its
# init is up; under QEMU the write goes nowhere, but KVM still traces it) and the moment the VMM
# was started (a trace marker).
# Output, for the host side to parse:
#   PROFILE <vmm> <run> <what>   then that section's text, up to the next PROFILE line
#   what: console (the VMM's output: the dmesg, and fennec's log), trace (host times, seconds:
#         "S <t>" the VMM started, "T <t> <reason>" an exit, "M <t> <msr>" an MSR write,
#         "B <t>" the boot-timer write)
n="${N:-1}"
t=/sys/kernel/tracing
mount -t tracefs tracefs "$t" 2>/dev/null
cmdline='console=ttyS0 quiet initcall_debug printk.time=1 log_buf_len=4M panic=-1 reboot=t fennec.run="dmesg"'
boot() {
    case "$1" in
    fennec|fennec-baseline)
        "/fennec/$1" run -v --kernel /guest/vmlinux --initrd /guest/initramfs.cpio \
            --memory 256 --cmdline "$cmdline" ;;
    qemu-microvm)
        /fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm -enable-kvm -cpu host -m 256 \
            -smp 1 -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel /guest/vmlinux -initrd /guest/initramfs.cpio -append "$cmdline" ;;
    esac > /tmp/console 2>&1 < /dev/null
}
# The guest's boot-timer write (fennec's layout::BOOT_TIMER_START).
boot_timer=0xc0000000
if [ ! -e "$t/events/kvm/kvm_exit/enable" ]; then
    echo "PROFILE none 0 no-tracefs"
    exit 0
fi
echo mono > "$t/trace_clock"
echo 16384 > "$t/buffer_size_kb"
echo 1 > "$t/events/kvm/kvm_exit/enable"
echo 1 > "$t/events/kvm/kvm_msr/enable"
echo "gpa == $boot_timer" > "$t/events/kvm/kvm_mmio/filter"
echo 1 > "$t/events/kvm/kvm_mmio/enable"
i=0
while [ "$i" -lt "$n" ]; do
    vmms="fennec qemu-microvm"
    [ -x /fennec/fennec-baseline ] && vmms="fennec fennec-baseline qemu-microvm"
    for vmm in $vmms; do
        echo 0 > "$t/tracing_on"
        echo > "$t/trace"
        echo 1 > "$t/tracing_on"
        echo "fennec-bench-start" > "$t/trace_marker"
        boot "$vmm"
        echo 0 > "$t/tracing_on"
        echo "PROFILE $vmm $i console"
        cat /tmp/console
        echo "PROFILE $vmm $i trace"
        awk '{ ts = ""; for (f = 1; f < NF; f++) if ($f ~ /^[0-9]+\.[0-9]+:$/) { ts = $f; break } }
             / kvm_exit: / { for (f = 1; f < NF; f++) if ($f == "reason") { print "T", ts, $(f + 1); break } }
             / kvm_msr: msr_write / { for (f = 1; f < NF; f++) if ($f == "msr_write") { print "M", ts, $(f + 1); break } }
             / kvm_mmio: mmio write / { print "B", ts }
             /fennec-bench-start/ { print "S", ts }' "$t/trace"
        grep -m1 "entries-in-buffer" "$t/trace"
    done
    i=$((i + 1))
done
