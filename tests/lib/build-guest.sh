#!/bin/bash
# Builds the tiny Linux guest the tests boot under TCG, from Debian packages only:
# Debian's kernel (downloaded, never installed), a few of its modules, busybox-static and
# the host's own qemu-ga with its libraries, in a gzip'd newc initramfs.
#
#   build-guest.sh OUTDIR     writes OUTDIR/vmlinuz and OUTDIR/initrd.img
#   build-guest.sh --inputs   prints the packages and versions the result depends on
#                             (tests/lib/guest.bash hashes them into its cache key)
#
# The guest's /init mounts /dev/vda (ext4) on /mnt, starts qemu-ga on the virtio-serial
# port org.qemu.guest_agent.0 with an fsfreeze hook, prints GUEST-READY on the console,
# then increments /mnt/counter every 100 ms and prints "COUNTER n" after each write.
# The hook prints "FSFREEZE-HOOK freeze|thaw" on the console and appends
# "FSFREEZE-HOOK freeze" to /mnt/hook.log on freeze.
set -euo pipefail

# Modules the guest needs. Their dependencies are added from each .ko's depends=;
# crc32c_generic is named because ext4 and jbd2 only soft-depend on it, and the
# initramfs has no modprobe to follow soft dependencies.
WANTED_MODULES="virtio virtio_ring virtio_pci virtio_blk virtio_console crc32c_generic ext4"

die() {
	echo "build-guest: $*" >&2
	exit 1
}

# Prints the versioned package behind the linux-image-amd64 metapackage and the version to
# fetch, e.g. "linux-image-6.1.0-56-amd64 6.1.192-2". One apt-cache call: without a
# pkgcache.bin each call rebuilds the cache, which takes seconds.
kernel_package() {
	local pkg ver
	read -r pkg ver < <(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
		sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1) || true
	if [ -n "${pkg:-}" ] && [ -z "${ver:-}" ]; then
		ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }')
	fi
	[ -n "${pkg:-}" ] && [ -n "${ver:-}" ] || return 1
	echo "$pkg $ver"
}

installed_version() { # PACKAGE
	dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true
}

# Prints "kernel PKG VERSION", then the installed qemu-guest-agent and busybox-static.
print_inputs() {
	local kernel pkg ver
	kernel=$(kernel_package) || return 1
	echo "kernel $kernel"
	for pkg in qemu-guest-agent busybox-static; do
		ver=$(installed_version "$pkg")
		[ -n "$ver" ] || die "package $pkg is not installed (see build-aux/packages.txt)"
		echo "$pkg $ver"
	done
}

# Downloads the kernel package into DIR. An empty or stale package list is refreshed once.
download_kernel() { # DIR
	local kernel
	if kernel=$(kernel_package) &&
		(cd "$1" && apt-get -q -o APT::Sandbox::User=root download "${kernel/ /=}"); then
		return 0
	fi
	echo "build-guest: kernel download failed; refreshing the package lists once" >&2
	apt-get update -qq || die "apt-get update failed"
	kernel=$(kernel_package) || die "apt-cache cannot resolve linux-image-amd64"
	(cd "$1" && apt-get -q -o APT::Sandbox::User=root download "${kernel/ /=}") ||
		die "apt-get download ${kernel/ /=} failed"
}

# Prints the module names MODULE needs first, then MODULE, each once (depth first).
# Uses the index file $modindex ("name path" lines) and the set of names already printed.
declare -A module_seen=()
module_order() { # MODULE
	local name=${1//-/_} path deps dep
	[ -z "${module_seen[$name]:-}" ] || return 0
	module_seen[$name]=1
	path=$(awk -v n="$name" '$1 == n { print $2; exit }' "$modindex")
	[ -n "$path" ] || die "module $name is not in the kernel package"
	# depends= is a NUL-terminated string in the .modinfo section.
	deps=$(module_bytes "$path" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1)
	for dep in ${deps//,/ }; do
		module_order "$dep"
	done
	echo "$name"
}

module_bytes() { # PATH: the uncompressed module on stdout
	case $1 in
	*.ko) cat "$1" ;;
	*.ko.xz) xz -dc "$1" ;;
	*.ko.zst) zstd -qdc "$1" ;;
	*.ko.gz) gzip -dc "$1" ;;
	*) die "unknown module format: $1" ;;
	esac
}

# Copies BINARY to DEST under ROOT, with every library ldd lists at its own path.
copy_with_libraries() { # ROOT BINARY DEST
	local root=$1 bin=$2 dest=$3 lib
	mkdir -p "$root$(dirname "$dest")"
	cp -L "$bin" "$root$dest"
	# A static binary makes ldd say "not a dynamic executable" and fail: nothing to copy.
	for lib in $(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

write_init() { # FILE
	cat >"$1" <<'EOF'
#!/bin/sh
# Init of the test guest (see tests/lib/build-guest.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
exec </dev/console >/dev/console 2>&1

# Leaving init panics the kernel, and with panic=-1 and -no-reboot QEMU then exits,
# so the host sees a failed boot at once instead of waiting for GUEST-READY.
fail() {
	echo "GUEST-FAILED: $*"
	exit 1
}

# Waits up to 5 s for a path to appear (devices show up asynchronously).
wait_path() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		[ "$i" -le 100 ] || return 1
		sleep 0.05
	done
}

while read -r module; do
	insmod "/lib/modules/$module.ko" || fail "insmod $module"
done </etc/modules.order

wait_path /dev/vda || fail "no /dev/vda"
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"

# There is no udev, so make the /dev/virtio-ports link qemu-ga is usually given.
port=
i=0
while [ -z "$port" ]; do
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=${p##*/}
	done
	i=$((i + 1))
	[ -n "$port" ] || [ "$i" -le 100 ] || fail "no virtio port org.qemu.guest_agent.0"
	[ -n "$port" ] || sleep 0.05
done
wait_path "/dev/$port" || fail "no /dev/$port"
mkdir -p /dev/virtio-ports
ln -sf "/dev/$port" /dev/virtio-ports/org.qemu.guest_agent.0

qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 \
	-F/etc/qemu/fsfreeze-hook -t /run &
qga=$!
# Ready means qemu-ga holds the port open (it writes no pid file unless it daemonizes).
holds_port() { # PID
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink "$fd")" = "/dev/$port" ] && return 0
	done
	return 1
}
i=0
until holds_port "$qga"; do
	kill -0 "$qga" 2>/dev/null || fail "qemu-ga exited"
	i=$((i + 1))
	[ "$i" -le 200 ] || fail "qemu-ga did not open /dev/$port"
	sleep 0.05
done
echo GUEST-READY

n=$(cat /mnt/counter 2>/dev/null) || n=0
case $n in '' | *[!0-9]*) n=0 ;; esac
while :; do
	n=$((n + 1))
	echo "$n" >/mnt/counter
	echo "COUNTER $n"
	sleep 0.1
done
EOF
	chmod 755 "$1"
}

write_hook() { # FILE
	cat >"$1" <<'EOF'
#!/bin/sh
# qemu-ga runs this with "freeze" before freezing and "thaw" after thawing; its own
# output goes to /dev/null, so it writes to the console directly.
echo "FSFREEZE-HOOK $1" >/dev/console
if [ "$1" = freeze ]; then
	echo "FSFREEZE-HOOK freeze" >>/mnt/hook.log
fi
exit 0
EOF
	chmod 755 "$1"
}

build() { # OUTDIR
	local out=$1 work kdir root module applet qga busybox
	mkdir -p "$out"
	work=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $work now: it is local
	trap "rm -rf '$work'" EXIT

	download_kernel "$work"
	dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel" || die "dpkg-deb -x failed"
	kdir=$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)
	[ -n "$kdir" ] || die "the kernel package has no lib/modules"

	root=$work/root
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,mnt,tmp,etc/qemu,lib/modules}

	modindex=$work/modules.index
	find "$kdir" -name '*.ko*' | while read -r path; do
		module=${path##*/}
		module=${module%%.ko*}
		echo "${module//-/_} $path"
	done >"$modindex"
	for module in $WANTED_MODULES; do
		module_order "$module"
	done >"$root/etc/modules.order"
	while read -r module; do
		module_bytes "$(awk -v n="$module" '$1 == n { print $2; exit }' "$modindex")" \
			>"$root/lib/modules/$module.ko"
	done <"$root/etc/modules.order"

	qga=$(command -v qemu-ga || echo /usr/sbin/qemu-ga)
	[ -x "$qga" ] || die "qemu-ga is not installed (package qemu-guest-agent)"
	copy_with_libraries "$root" "$qga" /usr/sbin/qemu-ga

	busybox=$(command -v busybox) || die "busybox is not installed (package busybox-static)"
	copy_with_libraries "$root" "$busybox" /bin/busybox
	for applet in $("$busybox" --list-full); do
		[ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
	done

	write_init "$root/init"
	write_hook "$root/etc/qemu/fsfreeze-hook"

	cp "$work/kernel/boot/vmlinuz-"* "$out/vmlinuz.tmp"
	(cd "$root" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --quiet --owner 0:0 --reproducible) | gzip -9n >"$out/initrd.img.tmp"
	mv "$out/vmlinuz.tmp" "$out/vmlinuz"
	mv "$out/initrd.img.tmp" "$out/initrd.img"
	echo "build-guest: modules: $(tr '\n' ' ' <"$root/etc/modules.order")"
	echo "build-guest: wrote $out/vmlinuz and $out/initrd.img ($(du -k "$out/initrd.img" | cut -f1) KiB)"
}

case ${1:-} in
--inputs)
	# Output goes to a variable first so that a failed first attempt prints nothing.
	if ! inputs=$(print_inputs); then
		echo "build-guest: cannot resolve the kernel package; refreshing the package lists once" >&2
		apt-get update -qq || die "apt-get update failed"
		inputs=$(print_inputs) || die "cannot resolve linux-image-amd64 to a kernel package"
	fi
	echo "$inputs"
	;;
'' | -*)
	echo "usage: build-guest.sh OUTDIR | --inputs" >&2
	exit 2
	;;
*)
	build "$1"
	;;
esac
