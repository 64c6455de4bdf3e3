package pipeline

import (
	"fmt"
	"strings"
	"time"
)

// StoreError is a call to the state store that did not get through: the
// store refused the connection, did not answer within its deadlines, or
// failed in itself (a full disk, a damaged file), after the store's
// retries. Store names the store for people: never its password.
type StoreError struct {
	Store string // as store.Redact names it
	Op    string // "record nodes of run 20261126-091500-3fa9c1"
	Err   error
}

func (e *StoreError) Error() string {
	return fmt.Sprintf("state store %s: %s: %v", e.Store, e.Op, e.Err)
}

func (e *StoreError) Unwrap() error { return e.Err }

// UnrecordedError ends an execution whose last changes the store did not
// take: it stopped answering in the middle of the run, or a signal's grace
// ran out before the writes got through. Err is why the run stopped (
// ErrInterrupted, a *FailedError, or the store's error itself); the
// record holds what was written before, and the run is resumed from it.
type UnrecordedError struct {
	RunID string
	// Nodes are the nodes whose last status is not in the record, each
	// as "ID STATUS".
	Nodes []string
	// Run is the run's status that is not in the record; "" when it is.
	Run Status
	// Leases says the run's claim and locks were not given back: they
	// lapse by themselves within LeaseTTL.
	Leases   bool
	LeaseTTL time.Duration
	// Store is the store's last error.
	Store error
	Err   error
}

func (e *UnrecordedError) Error() string {
	return e.Err.Error()
}

func (e *UnrecordedError) Unwrap() []error {
	if e.Store == nil || e.Store == e.Err {
		return []error{e.Err}
	}
	return []error{e.Err, e.Store}
}

// Lines say, for people, what is not recorded and what to do: one line
// per change the store did not take, then how the run is resumed.
func (e *UnrecordedError) Lines() []string {
	var out []string
	for _, n := range e.Nodes {
		out = append(out, "not recorded: node "+n)
	}
	if e.Run != "" {
		out = append(out, "not recorded: run "+string(e.Run))
	}
	if e.Leases {
		out = append(out, fmt.Sprintf("not given back: the run's lease (it lapses within %s)", e.LeaseTTL))
	}
	var then []string
	if e.Run != "" {
		then = append(then, "the run stays '"+string(Running)+"' in the record until its lease lapses")
	}
	if e.Store != nil && e.Store != e.Err {
		then = append(then, "the state store's last error: "+e.Store.Error())
	}
	then = append(then, "resume with: release resume "+e.RunID)
	return append(out, strings.Join(then, "; "))
}
