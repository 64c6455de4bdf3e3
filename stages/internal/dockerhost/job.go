package dockerhost

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// Job is a one-off container to create: its argv replaces the image's
// entrypoint and command, it never restarts, publishes no port, and joins
// Network without a DNS name of its own.
type Job struct {
	Name    string
	Image   string
	Argv    []string
	Env     []string
	Labels  map[string]string
	Volumes []string
	Memory  int64
	CPUs    float64
	Network string
}

// CreateJob creates a job container, not started. Unlike Create it never
// removes a container in its way: a job of that name is someone's job.
func (h *Host) CreateJob(ctx context.Context, j Job) (Container, error) {
	cfg := &container.Config{
		Image:      j.Image,
		Entrypoint: j.Argv,
		Cmd:        []string{},
		Env:        j.Env,
		Labels:     j.Labels,
	}
	hc := &container.HostConfig{
		Binds:         j.Volumes,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Resources:     container.Resources{Memory: j.Memory, NanoCPUs: int64(j.CPUs * 1e9)},
	}
	if j.Network != "" {
		hc.NetworkMode = container.NetworkMode(j.Network)
	}
	resp, err := h.cli.ContainerCreate(ctx, cfg, hc, nil, nil, j.Name)
	if err != nil {
		return Container{}, fmt.Errorf("create container %s on %s: %w", j.Name, h.addr, err)
	}
	return Container{ID: resp.ID, Name: j.Name, Labels: j.Labels}, nil
}

// Follow copies what a container writes, stdout and stderr, from its
// start, to w until it stops (or ctx ends).
func (h *Host) Follow(ctx context.Context, id string, w io.Writer) error {
	rc, err := h.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		return fmt.Errorf("logs of container %s on %s: %w", id, h.addr, err)
	}
	defer rc.Close()
	if _, err := stdcopy.StdCopy(w, w, rc); err != nil && ctx.Err() == nil {
		return fmt.Errorf("logs of container %s on %s: %w", id, h.addr, err)
	}
	return ctx.Err()
}

// Wait waits for a started container to stop and returns its exit code.
// A created container that never started counts as stopped: start it
// first.
func (h *Host) Wait(ctx context.Context, id string) (int, error) {
	okc, errc := h.cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case r := <-okc:
		if r.Error != nil && r.Error.Message != "" {
			return int(r.StatusCode), fmt.Errorf("wait for container %s on %s: %s", id, h.addr, r.Error.Message)
		}
		return int(r.StatusCode), nil
	case err := <-errc:
		return 0, fmt.Errorf("wait for container %s on %s: %w", id, h.addr, err)
	}
}

// ExecTo runs argv in a running container, without a shell, copying its
// output (stdout and stderr) to w as it comes, and returns its exit code.
func (h *Host) ExecTo(ctx context.Context, id string, argv []string, w io.Writer) (int, error) {
	ex, err := h.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	att, err := h.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	// The attached stream does not end when ctx does.
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	defer att.Close()
	if _, err := stdcopy.StdCopy(w, w, att.Reader); err != nil && ctx.Err() == nil {
		return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
	}
	// The stream ends as the process does; the engine may take a moment
	// more to say so.
	for {
		in, err := h.cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, err)
		}
		if !in.Running {
			return in.ExitCode, nil
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return 0, fmt.Errorf("exec in container %s on %s: %w", id, h.addr, ctx.Err())
		}
	}
}
