package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sweepboard/release/pipeline"
)

// killAfterWritesEnv is fault injection for tests, and only for them: with
// RELEASE_TEST_KILL_AFTER_WRITES=k the process numbers every persisted
// status change (a run created or saved, nodes saved, a release or a
// deployment recorded) on stderr as "fault injection: write N: WHAT", and
// sends itself SIGKILL right after the k-th one has returned (0: never).
// The crash sweep (crashsweep_test.go) kills a run at every such point.
const killAfterWritesEnv = "RELEASE_TEST_KILL_AFTER_WRITES"

// killAfterWrites is a pipeline.Store that counts status writes and dies
// after the after-th one.
type killAfterWrites struct {
	pipeline.Store
	*writeCount
}

// writeCount is shared by the store and its fenced views.
type writeCount struct {
	after int
	log   io.Writer

	mu sync.Mutex
	n  int
}

// Fenced keeps counting the writes of the fenced view.
func (s *killAfterWrites) Fenced(l *pipeline.Lease) pipeline.Store {
	return &killAfterWrites{Store: s.Store.Fenced(l), writeCount: s.writeCount}
}

// injectFaults wraps st when the environment asks for fault injection.
func injectFaults(st pipeline.Store, getenv func(string) string, log io.Writer) (pipeline.Store, error) {
	v := getenv(killAfterWritesEnv)
	if v == "" {
		return st, nil
	}
	k, err := strconv.Atoi(v)
	if err != nil || k < 0 {
		return nil, fmt.Errorf("%s=%q: want a count of writes", killAfterWritesEnv, v)
	}
	return &killAfterWrites{Store: st, writeCount: &writeCount{after: k, log: log}}, nil
}

// wrote counts a write that returned; holding mu while dying keeps any
// other write from slipping in after the k-th.
func (s *writeCount) wrote(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	fmt.Fprintf(s.log, "fault injection: write %d: %s\n", s.n, what)
	if s.n == s.after {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

func (s *killAfterWrites) CreateRun(ctx context.Context, r *pipeline.Run) error {
	if err := s.Store.CreateRun(ctx, r); err != nil {
		return err
	}
	s.wrote("create run " + string(r.Status))
	return nil
}

func (s *killAfterWrites) SaveRun(ctx context.Context, r *pipeline.Run) error {
	if err := s.Store.SaveRun(ctx, r); err != nil {
		return err
	}
	s.wrote("run " + string(r.Status))
	return nil
}

func (s *killAfterWrites) SaveNodes(ctx context.Context, runID string, nodes ...*pipeline.Node) error {
	if err := s.Store.SaveNodes(ctx, runID, nodes...); err != nil {
		return err
	}
	if len(nodes) == 0 {
		return nil // nothing changed
	}
	changes := make([]string, len(nodes))
	for i, n := range nodes {
		changes[i] = n.ID + "=" + string(n.Status)
	}
	s.wrote("nodes " + strings.Join(changes, " "))
	return nil
}

func (s *killAfterWrites) RecordRelease(ctx context.Context, r *pipeline.Release) error {
	if err := s.Store.RecordRelease(ctx, r); err != nil {
		return err
	}
	s.wrote("release " + r.Version)
	return nil
}

func (s *killAfterWrites) RecordDeployment(ctx context.Context, d *pipeline.Deployment) error {
	if err := s.Store.RecordDeployment(ctx, d); err != nil {
		return err
	}
	s.wrote("deployment " + d.Environment + " " + d.Version)
	return nil
}

var _ pipeline.Store = (*killAfterWrites)(nil)
