package main

import (
	"io"
)

// listenError is a listen address that is taken or invalid.
type listenError struct{ err error }

func (e *listenError) Error() string { return e.err.Error() }
func (e *listenError) Unwrap() error { return e.err }

func serveCommand(args []string, stdout, stderr io.Writer) int { return exitUsage }
