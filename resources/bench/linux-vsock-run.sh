#!/bin/sh
# Runs inside the test host (see linux-vsock.sh): boots the Linux guest under fennec with a vsock
# device and a virtio-net interface on tap0, N times. Each boot: 64 MiB host->guest over vsock
# and over TCP, then 64 MiB guest->host over TCP and over vsock, fennec-agent on both ends and
# each transfer timed on the receiving host side or by the host sender until the guest closed
# (the same way for both), then 100 connection set-ups. Prints one line per boot:
#   BENCHVSOCK <vsock h->g ms> <vsock g->h ms> <tcp h->g ms> <tcp g->h ms> <connect median us> <connect max us> <boot ms>
n="${N:-5}"
mib=64
bytes=$((mib * 1048576))
a=/guest/fennec-agent
ms() { read u r < /proc/uptime; echo $((${u%%.*} * 1000 + 1${u##*.}0 - 1000)); }
# No double quotes inside: the guest's init takes fennec.run="..." up to the next one.
io="ip addr add 10.0.0.2/24 dev eth0; ip link set eth0 up; fennec-agent discard 5001 & fennec-agent echo 5002 & fennec-agent tcp-discard 5003 & nc -l -p 5009 > /dev/null; fennec-agent tcp-send 10.0.0.1:5005 $bytes > /dev/null; fennec-agent send 2 5004 1 $bytes > /dev/null; echo GUEST-DONE; sleep 600"
cmdline="console=ttyS0 quiet panic=-1 reboot=t fennec.run=\"$io\""
ip=/fennec/ip
"$ip" tuntap add dev tap0 mode tap
"$ip" addr add 10.0.0.1/24 dev tap0
"$ip" link set tap0 up
i=0
while [ "$i" -lt "$n" ]; do
    rm -f /tmp/v.sock /tmp/v.sock_5004
    start=$(ms)
    timeout -s TERM 600 /fennec/fennec run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio \
        --memory 256 --cmdline "$cmdline" --net tap=tap0 --vsock cid=3,uds=/tmp/v.sock \
        > /tmp/console 2>&1 < /dev/null &
    vm=$!
    # Up once the guest's discard listener takes a connection.
    tries=0
    until "$a" host-send /tmp/v.sock 5001 0 > /dev/null 2>&1 || [ "$tries" -gt 600 ]; do
        tries=$((tries + 1)); sleep 0.1
    done
    boot=$(( $(ms) - start ))
    vh=$("$a" host-send /tmp/v.sock 5001 "$bytes" | sed -n 's/^ms //p')
    # The guest's TCP listener is up before its vsock one: no retry needed.
    th=$("$a" tcp-send 10.0.0.2:5003 "$bytes" | sed -n 's/^ms //p')
    "$a" tcp-recv 5005 > /tmp/trecv & l1=$!
    "$a" host-recv /tmp/v.sock_5004 > /tmp/recv & l2=$!
    sleep 0.5
    echo go | nc 10.0.0.2 5009
    wait "$l1"; tg=$(sed -n 's/^ms \([0-9]*\).*/\1/p' /tmp/trecv)
    wait "$l2"; vg=$(sed -n 's/^ms \([0-9]*\).*/\1/p' /tmp/recv)
    lat=$("$a" host-connect /tmp/v.sock 5002 100 | sed -n 's/^us median \([0-9]*\) max \([0-9]*\)/\1 \2/p')
    kill "$vm" 2>/dev/null; wait "$vm" 2>/dev/null
    if [ -n "$vh" ] && [ -n "$vg" ] && [ -n "$th" ] && [ -n "$tg" ] && [ -n "$lat" ]; then
        echo "BENCHVSOCK $vh $vg $th $tg $lat $boot"
    else
        echo "BENCH-FAILED run $i (vsock $vh/$vg, latency $lat)"; tail -n 20 /tmp/console
    fi
    i=$((i + 1))
done
