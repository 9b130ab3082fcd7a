package store

import "log/slog"

// Undo collects the kernel steps of a change in progress, to be undone
// when its transaction fails: a change is one transaction plus its undo
// steps.
type Undo []func() error

// Add registers the step that undoes one just done.
func (u *Undo) Add(step func() error) { *u = append(*u, step) }

// Run undoes in reverse order, best effort.
func (u Undo) Run(log *slog.Logger) {
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](); err != nil {
			log.Warn("undo a failed change", "err", err)
		}
	}
}
