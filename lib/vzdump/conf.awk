# lib/vzdump/conf.awk: a vzdump.conf in one pass, for read_vzdump_conf (options.bash), so that
# the shell sees a few records however long the file is. As vzdump reads it: blanks around a
# line and the line ending are dropped, empty lines and lines starting with # are skipped, and
# of a key given more than once the last value counts.
#   -v known=' dumpdir tmpdir ... '   the keys that read_vzdump_conf takes, space-separated
# Prints, fields separated by tabs (the last field may hold tabs of its own):
#   W LINE line TEXT      a line that is not `key: value`   (the first 20 such warnings)
#   W LINE key KEY        a key that is not known
#   M COUNT               how many warnings there were past those 20
#   K LINE KEY VALUE      each known key once, at its last line, in line order
BEGIN {
	FS = "\n"
	split(known, list, " ")
	for (i in list)
		is_known[list[i]] = 1
	warned = 0
}
{
	line = $0
	sub(/^[ \t]+/, "", line)
	sub(/[ \t\r]+$/, "", line)
	if (line == "" || line ~ /^#/)
		next
	if (!match(line, /^[^ \t\r\n\f\v:]+:/)) {
		warn(NR, "line", line)
		next
	}
	key = substr(line, 1, RLENGTH - 1)
	value = substr(line, RLENGTH + 1)
	sub(/^[ \t\r\n\f\v]+/, "", value)
	if (!(key in is_known)) {
		warn(NR, "key", key)
		next
	}
	last[key] = NR
	val[key] = value
}
END {
	if (warned > 20)
		printf "M\t%d\n", warned - 20
	for (key in last)
		at[last[key]] = key
	for (n = 1; n <= NR; n++)
		if (n in at)
			printf "K\t%d\t%s\t%s\n", n, at[n], val[at[n]]
}
function warn(n, what, text) {
	if (++warned <= 20)
		printf "W\t%d\t%s\t%s\n", n, what, text
}
