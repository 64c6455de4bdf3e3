package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/store"
)

// storeOptions are how the state store is reached: within the pipeline
// file's timeouts when there is a file (a command that needs none, such
// as `runs` with RELEASE_STATE, takes the defaults), its retries and slow
// calls reported on stderr.
func (f *Factory) storeOptions() store.Options {
	var d deadline.Deadlines
	if _, err := os.Stat(f.FileName()); err == nil || !errors.Is(err, os.ErrNotExist) {
		if p, err := f.Pipeline(); err == nil {
			d = p.Spec.Timeouts
		}
	}
	return store.Options{
		Deadlines: d,
		Notify:    func(s string) { fmt.Fprintf(f.IO.ErrOut, "release: %s\n", s) },
	}
}
