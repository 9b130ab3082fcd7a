# failures.awk prints, after a failed `go test -v` run, what each failed
# test said itself (its log and error lines, not the daemon logs its
# cleanup dumps) above its FAIL line: the end of a long run's output is
# what a reader sees first, and the reason there would be pages up.
/^=== RUN   [^\/]+$/ { said = "" }
/^ +[A-Za-z0-9_.]+\.go:[0-9]+: / && !/daemon log:$/ { said = said $0 "\n" }
/^--- FAIL: / { printf "%s%s\n", said, $0 }
