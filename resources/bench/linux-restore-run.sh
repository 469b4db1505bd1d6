#!/bin/sh
# Runs inside the test host (see linux-restore.sh): the microVM Linux guest (busybox shell on
# its console) booted cold and restored from a snapshot of it, N times each, alternating, and
# prints one line per run:
#   BENCH boot <centiseconds from start to the init's ready marker>
#   BENCH restore <centiseconds from start to the answer to a command typed at start>
# The snapshot is taken once, of the same guest sitting at its shell prompt.
n="${N:-10}"
cmdline='console=ttyS0 quiet panic=-1'
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
guest="--kernel /guest/vmlinux --initrd /guest/initramfs.cpio --memory 256 --cmdline"
# Waits up to 60 s for $2 in file $1; 0 when it came.
wait_for() {
    t=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        t=$((t + 1)); [ "$t" -gt 6000 ] && return 1; sleep 0.01
    done
}
mkdir -p /tmp/snaps
/fennec/fennec run --api-socket /tmp/snap.sock --allow-path /tmp/snaps $guest "$cmdline" \
    > /tmp/snap-console 2>&1 < /dev/null &
wait_for /tmp/snap-console FENNEC-GUEST-READY || { echo "BENCH-FAILED snapshot"; exit 1; }
sleep 1
/fennec/fennec ctl --api-socket /tmp/snap.sock snapshot-vm /tmp/snaps/ready > /dev/null \
    || { echo "BENCH-FAILED snapshot"; exit 1; }
/fennec/fennec ctl --api-socket /tmp/snap.sock stop > /dev/null
wait
i=0
while [ "$i" -lt "$n" ]; do
    start=$(now)
    /fennec/fennec run $guest "$cmdline" > /tmp/console 2>&1 < /dev/null &
    pid=$!
    if wait_for /tmp/console FENNEC-GUEST-READY; then
        echo "BENCH boot $(($(now) - start))"
    else
        echo "BENCH-FAILED boot"; tail -n 20 /tmp/console
    fi
    kill "$pid"; wait "$pid"
    start=$(now)
    printf 'echo ANSWER-$((6 * 7))\n' | /fennec/fennec run --restore /tmp/snaps/ready \
        > /tmp/console 2>&1 &
    pid=$!
    if wait_for /tmp/console ANSWER-42; then
        echo "BENCH restore $(($(now) - start))"
    else
        echo "BENCH-FAILED restore"; tail -n 20 /tmp/console
    fi
    kill "$pid"; wait "$pid"
    i=$((i + 1))
done
