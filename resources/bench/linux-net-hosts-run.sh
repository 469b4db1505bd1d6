#!/bin/sh
# Runs inside the test host (see linux-net-hosts.sh): the same Linux guest moves 64 MiB each way
# over TCP (busybox nc) on each network host side, N rounds, the sides taking turns:
#   fennec-tap     fennec, --net tap=tap0
#   fennec-bridge  fennec, --net bridge=br0 (the TAP fennec makes)
#   fennec-user    fennec, --net user (passt), the host reaching the guest through hostfwd
#   qemu-bridge    QEMU microvm, virtio-net-device on a TAP on br0 (what -netdev bridge's
#                  helper sets up), userspace virtio
#   qemu-stream    QEMU microvm, -netdev stream to passt's socket
# Prints one line per boot:
#   BENCHNET <side> <host->guest centiseconds> <guest->host centiseconds>
# or BENCH-STALLED when the guest did not get all of host->guest within 60 s.
n="${N:-5}"
mib=64
t() { read u r < /proc/uptime; echo $((${u%%.*} * 100 + 1${u##*.} - 100)); }
ip=/fennec/ip
# The TAP side's network, the bridge's, and an uplink for passt (a default route to copy).
"$ip" tuntap add dev tap0 mode tap && "$ip" addr add 10.0.0.1/24 dev tap0 && "$ip" link set tap0 up
"$ip" link add br0 type bridge && "$ip" addr add 10.0.1.1/24 dev br0 && "$ip" link set br0 up
"$ip" link add up0 type veth peer name up1 && "$ip" addr add 10.77.0.1/24 dev up0
"$ip" link set up0 up && "$ip" link set up1 up && "$ip" route add default via 10.77.0.254
dd if=/dev/zero of=/tmp/send bs=1M count=$mib 2>/dev/null
mkfifo /tmp/hold
exec 9<>/tmp/hold
# The guest: its address (static, or DHCP from passt), a listener, then its send to the host.
# No double quotes inside: the guest's init takes fennec.run="..." up to the next one.
guest() { # $1: static CIDR or "dhcp"; $2: the host's address to send to
    if [ "$1" = dhcp ]; then
        cfg="printf '#!/bin/sh\n[ \$1 = bound ] || exit 0\nip addr add \$ip/\$mask dev \$interface\nip route add default via \$router\n' > /tmp/d.sh; chmod +x /tmp/d.sh; ip link set eth0 up; udhcpc -i eth0 -n -q -s /tmp/d.sh > /dev/null 2>&1"
    else
        cfg="ip addr add $1 dev eth0; ip link set eth0 up"
    fi
    io="t() { read u r < /proc/uptime; echo \$((\${u%%.*} * 100 + 1\${u##*.} - 100)); }; $cfg; echo GUEST-LISTENING; nc -l -p 5001 > /tmp/in; echo GUEST-GOT-IT \$(wc -c < /tmp/in); rm /tmp/in; a=\$(t); dd if=/dev/zero bs=1M count=$mib 2>/dev/null | nc $2 5002; b=\$(t); echo BENCHNET \$((b - a))"
    echo "console=ttyS0 quiet panic=-1 reboot=t fennec.run=\"$io\""
}
run() { # $1: side; $2: the guest's address to send to; $3: its port; then the VMM's command
    side="$1"; dest="$2"; port="$3"; shift 3
    nc -l -p 5002 > /dev/null < /tmp/hold &
    listener=$!
    timeout -s TERM 200 "$@" > /tmp/console 2>&1 < /dev/null &
    vm=$!
    tries=0
    until grep -q GUEST-LISTENING /tmp/console || [ "$tries" -gt 1200 ]; do
        tries=$((tries + 1)); sleep 0.1
    done
    # Host to guest, timed from the connection that succeeds (the guest's nc listens just
    # after its marker); 60 s at most: Debian 12's passt stalls bulk data towards the guest
    # (README, Known problems).
    sleep 0.5
    while [ "$tries" -le 1300 ]; do
        a=$(t)
        timeout 60 nc "$dest" "$port" < /tmp/send 2>/dev/null && break
        tries=$((tries + 1))
        sleep 0.1
    done
    b=$(t)
    # How much the guest got (it counts after its listener ends).
    waited=0
    until grep -q GUEST-GOT-IT /tmp/console || [ "$waited" -gt 600 ]; do
        waited=$((waited + 1)); sleep 0.1
    done
    wait "$vm"
    kill "$listener" 2>/dev/null
    wait "$listener" 2>/dev/null
    line="$(grep -a '^BENCHNET' /tmp/console | tr -d '\r')"
    got="$(grep -a '^GUEST-GOT-IT' /tmp/console | tr -d '\r' | cut -d' ' -f2)"
    if [ "$got" != $((mib * 1048576)) ]; then
        echo "BENCH-STALLED $side host->guest: the guest got ${got:-nothing} of $((mib * 1048576)) bytes in 60 s${line:+; guest->host ${line#BENCHNET } cs}"
    elif [ -n "$line" ] && [ "$tries" -le 1300 ]; then
        echo "BENCHNET $side $((b - a)) ${line#BENCHNET }"
    else
        echo "BENCH-FAILED $side (tries $tries)"; tail -n 20 /tmp/console
    fi
}
k="--kernel /guest/vmlinux --initrd /guest/initramfs.cpio --memory 256"
q="/fennec/qemu-system-x86_64 -L /fennec/qemu-share -M microvm,acpi=off -enable-kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -nographic -serial stdio -no-reboot -kernel /guest/vmlinux -initrd /guest/initramfs.cpio"
i=0
while [ "$i" -lt "$n" ]; do
    # shellcheck disable=SC2086
    run fennec-tap 10.0.0.2 5001 /fennec/fennec run $k --cmdline "$(guest 10.0.0.2/24 10.0.0.1)" --net tap=tap0
    # shellcheck disable=SC2086
    run fennec-bridge 10.0.1.2 5001 /fennec/fennec run $k --cmdline "$(guest 10.0.1.2/24 10.0.1.1)" --net bridge=br0
    # passt maps the gateway's address to the host's loopback.
    # shellcheck disable=SC2086
    run fennec-user 127.0.0.1 15001 /fennec/fennec run $k --cmdline "$(guest dhcp 10.77.0.254)" \
        --net user,hostfwd=tcp::15001-:5001
    "$ip" tuntap add dev qtap mode tap && "$ip" link set qtap master br0 up
    # shellcheck disable=SC2086
    run qemu-bridge 10.0.1.2 5001 $q -append "$(guest 10.0.1.2/24 10.0.1.1)" \
        -netdev tap,id=n0,ifname=qtap,script=no,downscript=no -device virtio-net-device,netdev=n0
    "$ip" link del qtap
    rm -f /tmp/passt.sock
    # (As fennec does as root: passt drops to nobody, by number, since the test host has no
    # /etc/passwd.)
    /fennec/passt --quiet --one-off --runas 65534:65534 --socket /tmp/passt.sock -t 15001:5001 2>/dev/null
    # shellcheck disable=SC2086
    run qemu-stream 127.0.0.1 15001 $q -append "$(guest dhcp 10.77.0.254)" \
        -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/passt.sock \
        -device virtio-net-device,netdev=n0
    i=$((i + 1))
done
