#!/bin/sh
# Runs inside the test host (see debian-boot.sh): boots the Debian guest N times under each VMM,
# alternating, each time on a fresh copy of its root filesystem, waits for the line its report
# unit prints at multi-user.target, ends the VMM, and prints one line per boot:
#   BENCH <vmm> <guest uptime at the report, s> <centiseconds from VMM start to the report>
n="${N:-5}"
g=/guest
cmdline="console=ttyS0 quiet"
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
boot() {
    vmm="$1"; shift
    cp "$g/debian-rootfs.ext4" /tmp/root.ext4
    start=$(now)
    "$@" > /tmp/console 2>&1 < /dev/null &
    pid=$!
    ready=""
    while [ $(( $(now) - start )) -lt 30000 ] && kill -0 "$pid" 2>/dev/null; do
        # The whole line: the report's last field is there once its first has been written.
        ready=$(grep -a -m1 'FENNEC-DEBIAN-READY .* ifaces=' /tmp/console || true)
        [ -n "$ready" ] && break
        sleep 0.2
    done
    end=$(now)
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    uptime=$(echo "$ready" | tr ' ' '\n' | sed -n 's/^uptime=//p')
    if [ -n "$uptime" ]; then
        echo "BENCH $vmm $uptime $((end - start))"
    else
        echo "BENCH-FAILED $vmm"; tail -n 30 /tmp/console
    fi
    rm -f /tmp/root.ext4
}
i=0
while [ "$i" -lt "$n" ]; do
    boot fennec /fennec/fennec run --kernel $g/debian-vmlinuz --initrd $g/debian-initrd.img \
        --cmdline "$cmdline" --vcpus 2 --memory 512 --disk path=/tmp/root.ext4,root
    boot qemu-microvm /fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm,acpi=on \
        -enable-kvm -cpu host -m 512 -smp 2 -nodefaults -no-user-config -nographic \
        -serial stdio -no-reboot -kernel $g/debian-vmlinuz -initrd $g/debian-initrd.img \
        -drive id=root,file=/tmp/root.ext4,format=raw,if=none -device virtio-blk-device,drive=root \
        -append "$cmdline root=/dev/vda rw"
    boot qemu-q35 /fennec/qemu-system-x86_64 -L /fennec/qemu-share -L /fennec/seabios-share -M q35 \
        -enable-kvm -cpu host -m 512 -smp 2 -nodefaults -no-user-config -nographic \
        -serial stdio -no-reboot -kernel $g/debian-vmlinuz -initrd $g/debian-initrd.img \
        -drive id=root,file=/tmp/root.ext4,format=raw,if=none -device virtio-blk-pci,drive=root \
        -append "$cmdline root=/dev/vda rw"
    i=$((i + 1))
done
