//go:build !linux

package main

import (
	"errors"
	"os"
)

// noEcho is not done off Linux: the password is read as a line.
func noEcho(*os.File) (func(), error) { return nil, errors.New("no terminal control") }
