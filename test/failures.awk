# failures.awk prints, after a failed `go test -v` run, what each failed
# test said itself (its log and error lines, not the daemon logs its
# cleanup dumps) above its FAIL line: the end of a long run's output is
# what a reader sees first, and the reason there would be pages up.
# Tests that run in parallel interleave their output; go test marks
# whose lines follow (=== RUN, CONT, NAME), so each line goes to its
# top-level test.
/^=== (RUN|PAUSE|CONT|NAME) / {
	test = $3; sub(/\/.*/, "", test)
	if ($2 == "RUN" && $3 !~ /\//) said[test] = ""
}
/^ +[A-Za-z0-9_.]+\.go:[0-9]+: / && !/daemon log:$/ { said[test] = said[test] $0 "\n" }
/^--- FAIL: / { printf "%s%s\n", said[$3], $0 }
