package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has c's process get SIGTERM if this process dies, so that
// a killed local-cluster leaves no member behind.
func dieWithParent(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
