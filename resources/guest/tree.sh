# Sourced by build-guest-initramfs.sh and build-guest-rootfs.sh: fills directory "$root" with the
# guest's userland (busybox-static and resources/guest/init).
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt}
cp /bin/busybox "$root/bin/busybox"
cp "$here/guest/init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
ln -s ../init "$root/sbin/init"
