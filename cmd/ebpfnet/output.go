package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}

// printTable writes rows under a header, aligned like docker's listings.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// parseKeyValues turns repeated k=v flags into a map.
func parseKeyValues(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid %s %q: want KEY=VALUE", flag, p)
		}
		m[k] = v
	}
	return m, nil
}

// parseEach parses every argument, stopping at the first it cannot.
func parseEach[T any](args []string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, a := range args {
		v, err := parse(a)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// inspectEach fetches every reference and prints them as one JSON array,
// as docker inspect does.
func inspectEach[T any](w io.Writer, refs []string, fetch func(ref string) (T, error)) error {
	out := []T{}
	for _, ref := range refs {
		v, err := fetch(ref)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return printJSON(w, out)
}

// removeEach removes every reference, printing those it removed and
// joining the errors of the others.
func removeEach(w io.Writer, refs []string, remove func(ref string) error) error {
	var errs []error
	for _, ref := range refs {
		if err := remove(ref); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(w, ref)
	}
	return errors.Join(errs...)
}
