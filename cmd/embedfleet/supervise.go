package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// component is one long-running part of a command (a metrics server, a
// worker), run until its context ends.
type component struct {
	name string
	run  func(context.Context) error
}

// errStoppedEarly is what a component that returned while it was still
// wanted reports.
var errStoppedEarly = errors.New("stopped on its own")

// supervise runs main beside comps and returns when all have stopped. Stop
// order: when main returns (its work done, or the command's context ended),
// every component's context is cancelled and each is waited for; when a
// component fails (or returns on its own) first, main's context is
// cancelled with that cause, main winds down, then the other components
// stop, and the component's error is the command's. Nothing runs
// unwatched: a dead metrics server or a worker whose Run failed ends the
// command with its error.
func supervise(ctx context.Context, main func(context.Context) error, comps ...component) error {
	mainCtx, failMain := context.WithCancelCause(ctx)
	defer failMain(nil)
	compCtx, stopComps := context.WithCancel(ctx)
	defer stopComps()
	var (
		wg      sync.WaitGroup
		once    sync.Once
		compErr error
	)
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.run(compCtx)
			if compCtx.Err() != nil {
				return // asked to stop: whatever it says is its shutdown
			}
			if err == nil {
				err = errStoppedEarly
			}
			once.Do(func() {
				compErr = fmt.Errorf("%s: %w", c.name, err)
				failMain(compErr)
			})
		}()
	}
	err := main(mainCtx)
	stopComps()
	wg.Wait()
	if compErr != nil {
		return compErr
	}
	return err
}
