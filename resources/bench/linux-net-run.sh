#!/bin/sh
# Runs inside the test host (see linux-net.sh): boots the same Linux guest with one virtio-net
# interface on tap0 N times under fennec and under QEMU's microvm machine, alternating. Each
# boot moves 64 MiB host->guest (the host's nc sends to the guest's `nc -l`, timed on the host)
# and 64 MiB guest->host (the guest's dd | nc to the host's `nc -l`, timed in the guest), and
# prints one line:
#   BENCHNET <vmm> <host->guest centiseconds> <guest->host centiseconds>
n="${N:-10}"
mib=64
t() { read u r < /proc/uptime; echo $((${u%%.*} * 100 + 1${u##*.} - 100)); }
# No double quotes inside: the guest's init takes fennec.run="..." up to the next one.
io="t() { read u r < /proc/uptime; echo \$((\${u%%.*} * 100 + 1\${u##*.} - 100)); }; ip addr add 10.0.0.2/24 dev eth0; ip link set eth0 up; nc -l -p 5001 > /dev/null; a=\$(t); dd if=/dev/zero bs=1M count=$mib 2>/dev/null | nc 10.0.0.1 5002; b=\$(t); echo BENCHNET \$((b - a))"
cmdline="console=ttyS0 quiet panic=-1 reboot=t fennec.run=\"$io\""
# iproute2's ip, by path: busybox's sh would run its own applet, which has no tuntap.
ip=/fennec/ip
"$ip" tuntap add dev tap0 mode tap
"$ip" addr add 10.0.0.1/24 dev tap0
"$ip" link set tap0 up
dd if=/dev/zero of=/tmp/send bs=1M count=$mib 2>/dev/null
# The host's listener reads stdin from a FIFO nobody writes (this shell holds it open), so it
# never half-closes early: busybox nc stops when its peer does.
mkfifo /tmp/hold
exec 9<>/tmp/hold
run() {
    vmm="$1"; shift
    nc -l -p 5002 > /dev/null < /tmp/hold &
    listener=$!
    # A run that hangs is stopped (fennec then logs its counters) and reported.
    timeout -s TERM 240 "$@" > /tmp/console 2>&1 < /dev/null &
    vm=$!
    # Host to guest, timed from the connection that succeeds (the guest's nc listens late).
    tries=0
    while [ "$tries" -lt 600 ]; do
        a=$(t)
        timeout 240 nc 10.0.0.2 5001 < /tmp/send 2>/dev/null && break
        tries=$((tries + 1))
        sleep 0.1
    done
    b=$(t)
    wait "$vm"
    kill "$listener" 2>/dev/null
    wait "$listener" 2>/dev/null
    line="$(grep -a '^BENCHNET' /tmp/console | tr -d '\r')"
    if [ -n "$line" ] && [ "$tries" -lt 600 ]; then
        echo "BENCHNET $vmm $((b - a)) ${line#BENCHNET }"
    else
        echo "BENCH-FAILED $vmm (host->guest tries $tries)"; tail -n 20 /tmp/console
    fi
}
i=0
while [ "$i" -lt "$n" ]; do
    run fennec /fennec/fennec -v run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio \
        --memory 256 --cmdline "$cmdline" --net tap=tap0
    run qemu-microvm /fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm,acpi=off \
        -enable-kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -nographic \
        -serial stdio -no-reboot -kernel /guest/vmlinux -initrd /guest/initramfs.cpio \
        -append "$cmdline" -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device virtio-net-device,netdev=n0
    i=$((i + 1))
done
