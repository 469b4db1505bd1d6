#!/bin/sh
# Runs inside the test host (see linux-block.sh): boots the same Linux guest with a 128 MiB data
# disk N times under fennec and under QEMU's microvm machine, alternating. The guest reads the
# disk with `dd bs=1M iflag=direct`, then writes it with `oflag=direct conv=fsync`, timing each
# with /proc/uptime, and prints one line per boot:
#   BENCHIO <vmm> <read centiseconds> <write centiseconds>
n="${N:-10}"
# No double quotes inside: the guest's init takes fennec.run="..." up to the next one.
io='t() { read u r < /proc/uptime; echo $((${u%%.*} * 100 + 1${u##*.} - 100)); }; a=$(t); dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null; b=$(t); dd if=/dev/zero of=/dev/vda bs=1M count=128 oflag=direct conv=fsync 2>/dev/null; c=$(t); echo BENCHIO $((b - a)) $((c - b))'
cmdline="console=ttyS0 quiet panic=-1 reboot=t fennec.run=\"$io\""
dd if=/dev/zero of=/tmp/data.img bs=1M count=128 2>/dev/null
run() {
    vmm="$1"; shift
    "$@" > /tmp/console 2>&1 < /dev/null
    line="$(grep -a '^BENCHIO' /tmp/console | tr -d '\r')"
    if [ -n "$line" ]; then
        echo "BENCHIO $vmm ${line#BENCHIO }"
    else
        echo "BENCH-FAILED $vmm"; tail -n 20 /tmp/console
    fi
}
i=0
while [ "$i" -lt "$n" ]; do
    run fennec /fennec/fennec run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio \
        --memory 256 --cmdline "$cmdline" --disk path=/tmp/data.img
    run qemu-microvm /fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm,acpi=off \
        -enable-kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -nographic \
        -serial stdio -no-reboot -kernel /guest/vmlinux -initrd /guest/initramfs.cpio \
        -append "$cmdline" -drive id=d0,file=/tmp/data.img,format=raw,if=none \
        -device virtio-blk-device,drive=d0
    i=$((i + 1))
done
