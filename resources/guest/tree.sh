# Sourced by build-guest-initramfs.sh and build-guest-rootfs.sh: fills directory "$root" with the
# guest's userland (busybox-static, resources/guest/init, and the agent at "$agent").
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt}
cp /bin/busybox "$root/bin/busybox"
cp "$here/guest/init" "$root/init"
cp "$agent" "$root/bin/fennec-agent"
chmod 755 "$root/init" "$root/bin/busybox" "$root/bin/fennec-agent"
ln -s busybox "$root/bin/sh"
ln -s ../init "$root/sbin/init"
