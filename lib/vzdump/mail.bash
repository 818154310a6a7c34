# shellcheck shell=bash
# lib/vzdump/mail.bash: the job's mail (vzdump's mailto and mailnotification), built from the
# job's results (one JSON line per VM, record_result) and the logs of the VMs that failed (kept
# by keep_failed_log, all in the job's private folder), sent through `sendmail -t -i` as vzdump's
# legacy notification does. A mail that cannot be sent is a warning: it never fails a backup,
# and a sendmail that hangs is stopped after VZDUMP_MAIL_TIMEOUT seconds.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# vzdump leaves a log over 1 MiB out of its mail (MAX_LOG_SIZE); the mail says so.
MAIL_MAX_LOG_BYTES=1048576
# Where sendmail is when it is not on PATH (cron's PATH has no /usr/sbin).
MAIL_SENDMAILS="/usr/sbin/sendmail /usr/lib/sendmail"

# Whether the job writes a mail at all: then its results are recorded (see main).
mail_wanted() { [ -n "$opt_mailto" ]; }

# The failed VM's log, for the mail (run from undo_on_exit, before the private folder goes).
keep_failed_log() { # EXIT-STATUS
	[ "$1" != 0 ] && [ -n "$results" ] && mail_wanted || return 0
	[ -n "$private_dir" ] && [ -f "$private_dir/log" ] || return 0
	cp -- "$private_dir/log" "$job_dir/$vmid.log" 2>/dev/null || true
}

# The mail, headers and body, on stdout.
#   STATUS   ok or error (the job's)
#   ERROR    why the job itself failed (job_abort), or empty
#   SECONDS  the job's running time
compose_mail() { # STATUS ERROR SECONDS
	local host status_text log size id name status seconds archive
	host=$(mail_host)
	status_text="backup successful"
	[ "$1" = ok ] || status_text="backup failed"
	printf 'To: %s\n' "$opt_mailto"
	printf 'Subject: vzdump backup status (%s): %s\n' "$host" "$status_text"
	printf 'Auto-Submitted: auto-generated\nMIME-Version: 1.0\n'
	printf 'Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n'
	[ -z "$2" ] && [ "$1" = ok ] || printf '%s\n\n' "${2:-Backup job finished with errors}"
	printf 'Details\n=======\n'
	# VMID, name, status, time, size and file of each VM, in columns (the file last: no pad).
	{
		printf 'VMID\tName\tStatus\tTime\tSize\tFilename\n'
		while IFS=$'\t' read -r id name status seconds size archive; do
			[ "$size" = - ] || size=$(format_archive_size "$size")
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$name" "$status" "$(format_time "$seconds")" \
				"$size" "$archive"
		done < <(jq -r 'def cell: if . == null or . == "" then "-" else . end;
			[.vmid, (.name | cell), (if .status == "ok" then "ok" else "err" end),
			(.end - .start), (.size | cell), (.archive | cell)] | @tsv' "$results")
	} | awk -F '\t' '{ for (i = 1; i <= NF; i++) { cell[NR, i] = $i
			if (length($i) > w[i]) w[i] = length($i) } }
		END { for (r = 1; r <= NR; r++) { line = ""
			for (i = 1; i < 6; i++) line = line sprintf("%-*s  ", w[i], cell[r, i])
			print line cell[r, 6] } }'
	size=$(jq -s 'map(.size // 0) | add // 0' "$results")
	printf '\nTotal running time: %s\nTotal size: %s\n' "$(format_time "$3")" \
		"$(format_archive_size "$size")"
	for log in "$job_dir"/[0-9]*.log; do
		[ -f "$log" ] || continue
		id=${log##*/}
		id=${id%.log}
		printf '\nLogs of VM %s\n===========%s\n' "$id" "${id//?/=}"
		if [ "$(stat -c %s -- "$log")" -gt "$MAIL_MAX_LOG_BYTES" ]; then
			printf 'The log is too long for a mail: see %s/vzdump-qemu-%s-*.log\n' "$opt_dumpdir" "$id"
		else
			sed "s/^/$id: /" -- "$log"
		fi
	done
}

# The host name the subject gives, fully qualified where the resolver says so (as vzdump's
# fqdn), without waiting long for it.
mail_host() {
	local fqdn
	fqdn=$(timeout 2 hostname -f 2>/dev/null) || fqdn=
	[[ $fqdn == *.* ]] || fqdn=$(uname -n)
	printf '%s\n' "$fqdn"
}

# Sends the job's mail when mailto is set and mailnotification asks for this outcome.
send_mail() { # STATUS ERROR
	mail_wanted && [ -n "$results" ] || return 0
	[ "$opt_mailnotification" = always ] || [ "$1" != ok ] || return 0
	local sendmail candidate rc=0 out=$job_dir/sendmail.out line=
	sendmail=$(command -v sendmail) || sendmail=
	for candidate in $MAIL_SENDMAILS; do
		[ -z "$sendmail" ] && [ -x "$candidate" ] && sendmail=$candidate
	done
	if [ -z "$sendmail" ]; then
		warn "no mail sent to $opt_mailto: there is no sendmail (install an MTA, such as exim4 or msmtp-mta)"
		return 0
	fi
	# Its output into a file, and without the job's stdout (json_fd): a delivery child that
	# lives on must not hold the job or its reader up; one that ignores TERM is killed 5 s later.
	compose_mail "$1" "${2:-}" "$((EPOCHSECONDS - job_start))" |
		unlocked timeout -k 5 "$MAIL_TIMEOUT" "$sendmail" -t -i >"$out" 2>&1 {json_fd}>&- || rc=$?
	if [ "$rc" = 0 ]; then
		info "mail sent to $opt_mailto"
		return 0
	fi
	IFS= read -r line <"$out" || true
	case $rc in
	124 | 137) line="timed out after $MAIL_TIMEOUT s" ;;
	esac
	warn "sending the mail to $opt_mailto failed${line:+: $line}"
}
