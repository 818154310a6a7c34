# shellcheck shell=bash
# For the tests of root-safety: a local user (nobody) who plants links and forged files in the
# folders where root works. Load it, call attack_dir in a test and attack_cleanup in teardown.

# Runs "$@" as nobody when we are root (root may unlink anything, whatever the modes say).
as_nobody() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
	else
		"$@"
	fi
}

# ATTACK_DIR: a new folder under /tmp that nobody can reach (bats' own temporary tree is
# private to root), with mode 755; what goes in it is up to the test.
attack_dir() {
	ATTACK_DIR=$(mktemp -d /tmp/vzdump-attack.XXXXXX)
	chmod 755 "$ATTACK_DIR"
}

attack_cleanup() {
	[ -n "${ATTACK_DIR:-}" ] || return 0
	chmod -R u+w "$ATTACK_DIR" 2>/dev/null || true
	rm -rf "$ATTACK_DIR"
	ATTACK_DIR=
}
